"""FedAvg (weighted by examples) and FairAvg (every client counts the same).

[0] FedAvg, 2017, arXiv:1602.05629
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from server_app.aggregation.base import Arrays, weighted_mean


def fedavg(updates: Sequence[Mapping[str, np.ndarray]], num_examples: Sequence[float],
           losses: Sequence[float], previous: Mapping[str, np.ndarray]) -> Arrays:
    """``sum_k n_k x_k / sum_k n_k``."""
    return weighted_mean(updates, num_examples)


def fairavg(updates: Sequence[Mapping[str, np.ndarray]], num_examples: Sequence[float],
            losses: Sequence[float], previous: Mapping[str, np.ndarray]) -> Arrays:
    """``mean_k x_k``: a device with much data does not dominate."""
    return weighted_mean(updates, [1.0] * len(updates))
