"""L-DAWA: layer-wise divergence-aware weight aggregation.

Each client's layer is scaled by its cosine similarity with the previous
global layer (clipped to at most 1), so a layer that drifted away counts less:
``g^l = sum_k (n_k / N) * min(1, cos(x_k^l, g_prev^l)) * x_k^l``. The reference is the previous global
model (not a client), so each update folds in on its own as it arrives.
[0] L-DAWA, 2023, arXiv:2307.07393
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from server_app.aggregation.base import Arrays, WeightedSum
from server_app.aggregation.fold import fold_all


def layer_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened layers, clipped to at most 1 (0 for a zero layer)."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(min(1.0, a @ b / denom)) if denom > 0 else 0.0


class DivergenceAware:
    """L-DAWA: ``g^l = sum_k (n_k / N) min(1, cos(x_k^l, g_prev^l)) x_k^l``; a layer that drifted counts less."""

    def __init__(self, previous: Mapping[str, np.ndarray]) -> None:
        self._previous, self._sum = previous, WeightedSum(previous)

    def add(self, update: Mapping[str, np.ndarray], num_examples: float, loss: float) -> None:
        self._sum.add(update, num_examples, lambda key, layer: layer_cosine(layer, self._previous[key]))

    def result(self) -> Arrays:
        return self._sum.mean()


def ldawa(updates: Sequence[Mapping[str, np.ndarray]], num_examples: Sequence[float],
          losses: Sequence[float], previous: Mapping[str, np.ndarray]) -> Arrays:
    return fold_all(DivergenceAware(previous), updates, num_examples, losses)
