"""Loss-weighted averaging and the FedVSSL mix of FedAvg, loss weighting and SWA.

[0] FedVSSL, 2022, arXiv:2207.01975
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from server_app.aggregation.base import Arrays, WeightedSum, mix
from server_app.aggregation.fedavg import ExampleWeighted
from server_app.aggregation.fold import fold_all


class LossWeighted:
    """``sum_k exp(-L_k) x_k / sum_k exp(-L_k)``, shifted by the smallest loss so far (an online softmax:
    when a lower loss arrives, what is folded is rescaled), so no weight overflows."""

    def __init__(self, previous: Mapping[str, np.ndarray]) -> None:
        self._sum = WeightedSum(previous)
        self._lowest = math.inf

    def add(self, update: Mapping[str, np.ndarray], num_examples: float, loss: float) -> None:
        if not math.isfinite(loss):
            raise ValueError(f"loss must be finite, got {loss!r}")
        if loss < self._lowest:
            if self._sum.count:
                self._sum.rescale(math.exp(loss - self._lowest))
            self._lowest = loss
        self._sum.add(update, math.exp(self._lowest - loss))

    def result(self) -> Arrays:
        return self._sum.mean()


class FedVSSLMix:
    """``beta * previous + (1 - beta) * (alpha * FedAvg + (1 - alpha) * loss-weighted)`` (FedVSSL)."""

    def __init__(self, previous: Mapping[str, np.ndarray], alpha: float = 0.5, beta: float = 0.0) -> None:
        self._previous, self._alpha, self._beta = previous, alpha, beta
        self._by_examples, self._by_loss = ExampleWeighted(previous), LossWeighted(previous)

    def add(self, update: Mapping[str, np.ndarray], num_examples: float, loss: float) -> None:
        decoded = {k: update[k] for k in self._previous}  # read once, folded twice
        self._by_loss.add(decoded, num_examples, loss)
        self._by_examples.add(decoded, num_examples, loss)

    def result(self) -> Arrays:
        blended = mix(self._by_examples.result(), self._by_loss.result(), self._alpha)
        return mix(self._previous, blended, self._beta) if self._beta > 0 else blended


def loss_weighted(updates: Sequence[Mapping[str, np.ndarray]], num_examples: Sequence[float],
                  losses: Sequence[float], previous: Mapping[str, np.ndarray]) -> Arrays:
    """``sum_k exp(-L_k) x_k / sum_k exp(-L_k)``: clients that fit their data better count more."""
    return fold_all(LossWeighted(previous), updates, num_examples, losses)


def fedvssl(updates: Sequence[Mapping[str, np.ndarray]], num_examples: Sequence[float],
            losses: Sequence[float], previous: Mapping[str, np.ndarray], alpha: float = 0.5,
            beta: float = 0.0) -> Arrays:
    """``beta * previous + (1 - beta) * (alpha * FedAvg + (1 - alpha) * loss_weighted)``.

    Unlike the public FedVSSL baseline (which concatenates the two lists so the
    loss term is dropped), the two averages are added, so ``alpha`` matters.
    """
    return fold_all(FedVSSLMix(previous, alpha, beta), updates, num_examples, losses)
