"""Shared arithmetic of aggregation rules: weighted sums of array dicts, one update at a time.

Integer buffers (BatchNorm's ``num_batches_tracked``) are not averaged: the
largest value is kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

Arrays = dict[str, np.ndarray]
Updates = Sequence[Mapping[str, np.ndarray]]
# rule(updates, num_examples, losses, previous_global) -> new global
Rule = Callable[[Updates, Sequence[float], Sequence[float], Mapping[str, np.ndarray]], Arrays]


def is_float(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating)


class WeightedSum:
    """``sum_k w_k x_k / sum_k w_k`` per key in float64, one update at a time; integer buffers: the largest.

    ``layer_factor(key, layer)`` optionally scales one update's layer on top of ``w_k`` without entering
    the denominator (L-DAWA's per-layer cosine).
    """

    def __init__(self, reference: Mapping[str, np.ndarray]) -> None:
        self._reference = reference
        self._sums: dict[str, np.ndarray] = {}
        self._largest: dict[str, np.ndarray] = {}
        self.total = 0.0
        self.count = 0

    def add(self, update: Mapping[str, np.ndarray], weight: float,
            layer_factor: Callable[[str, np.ndarray], float] | None = None) -> None:
        """Fold one update in (each key read once).

        Raises:
            ValueError: for a weight that is negative or not finite (nothing is folded).
        """
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight must be finite and non-negative, got {weight!r}")
        for key, ref in self._reference.items():
            value = update[key]
            if not is_float(ref):
                held = self._largest.get(key)
                self._largest[key] = np.array(value if held is None else np.maximum(held, value), dtype=ref.dtype)
                continue
            acc = self._sums.get(key)
            if acc is None:
                acc = self._sums[key] = np.zeros(ref.shape, dtype=np.float64)
            scale = weight * (layer_factor(key, value) if layer_factor else 1.0)
            if scale:
                _add_scaled(acc, value, scale)
        self.total += weight
        self.count += 1

    def rescale(self, factor: float) -> None:
        """Multiply every weight folded so far by ``factor`` (the online softmax of the loss weights)."""
        for acc in self._sums.values():
            acc *= factor
        self.total *= factor

    def mean(self) -> Arrays:
        """The weighted mean so far.

        Raises:
            ValueError: if nothing was folded or the weights sum to zero.
        """
        if not self.count:
            raise ValueError("nothing to aggregate: no updates")
        if self.total <= 0:
            raise ValueError(f"weights must have a positive sum, got {self.total}")
        out: Arrays = {k: (acc / self.total).astype(np.float32) for k, acc in self._sums.items()}
        return out | {k: v.copy() for k, v in self._largest.items()}


ADD_BLOCK = 1 << 16  # elements per block: the scaled copy stays in cache


def _add_scaled(acc: np.ndarray, value: np.ndarray, scale: float) -> None:
    """``acc += scale * value`` (float64 accumulator), block by block so no model-sized temporary is made."""
    flat_acc, flat_value = acc.reshape(-1), value.reshape(-1)
    for start in range(0, flat_value.size, ADD_BLOCK):
        block = flat_value[start:start + ADD_BLOCK]
        flat_acc[start:start + ADD_BLOCK] += scale * block


def mix(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], alpha: float) -> Arrays:
    """``alpha * a + (1 - alpha) * b`` on float entries; integers from ``a``."""
    return {k: np.asarray(alpha * a[k].astype(np.float64) + (1 - alpha) * b[k], dtype=np.float32)
            if is_float(a[k]) else a[k].copy() for k in a}
