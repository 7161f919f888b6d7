"""FedAvg (weighted by examples) and FairAvg (every client counts the same).

[0] FedAvg, 2017, arXiv:1602.05629
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from server_app.aggregation.base import Arrays, WeightedSum
from server_app.aggregation.fold import fold_all


class ExampleWeighted:
    """FedAvg: ``sum_k n_k x_k / sum_k n_k`` (``fair=True``: every update counts the same, FairAvg)."""

    def __init__(self, previous: Mapping[str, np.ndarray], fair: bool = False) -> None:
        self._sum, self._fair = WeightedSum(previous), fair

    def add(self, update: Mapping[str, np.ndarray], num_examples: float, loss: float) -> None:
        self._sum.add(update, 1.0 if self._fair else num_examples)

    def result(self) -> Arrays:
        return self._sum.mean()


def fedavg(updates: Sequence[Mapping[str, np.ndarray]], num_examples: Sequence[float],
           losses: Sequence[float], previous: Mapping[str, np.ndarray]) -> Arrays:
    """``sum_k n_k x_k / sum_k n_k``."""
    return fold_all(ExampleWeighted(previous), updates, num_examples, losses)


def fairavg(updates: Sequence[Mapping[str, np.ndarray]], num_examples: Sequence[float],
            losses: Sequence[float], previous: Mapping[str, np.ndarray]) -> Arrays:
    """``mean_k x_k``: a device with much data does not dominate."""
    return fold_all(ExampleWeighted(previous, fair=True), updates, num_examples, losses)
