"""Shared arithmetic of aggregation rules: weighted means of array dicts, key by key.

Integer buffers (BatchNorm's ``num_batches_tracked``) are not averaged: the
largest value is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

Arrays = dict[str, np.ndarray]
Updates = Sequence[Mapping[str, np.ndarray]]
# rule(updates, num_examples, losses, previous_global) -> new global
Rule = Callable[[Updates, Sequence[float], Sequence[float], Mapping[str, np.ndarray]], Arrays]


def is_float(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating)


def weighted_mean(updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> Arrays:
    """``sum_k w_k x_k / sum_k w_k`` per key, accumulated one client at a time (memory O(model)).

    Raises:
        ValueError: if there are no updates or the weights do not sum to a positive number.
    """
    if not updates:
        raise ValueError("nothing to aggregate: no updates")
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(updates) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be finite with a positive sum, got {list(weights)}")
    w = w / w.sum()
    out: Arrays = {}
    for key, first in updates[0].items():
        if is_float(first):
            acc = np.zeros(first.shape, dtype=np.float64)
            for wk, update in zip(w, updates):
                acc += wk * update[key]
            out[key] = acc.astype(np.float32)
        else:
            out[key] = np.array(np.max([u[key] for u in updates], axis=0), dtype=first.dtype)
    return out


def mix(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], alpha: float) -> Arrays:
    """``alpha * a + (1 - alpha) * b`` on float entries; integers from ``a``."""
    return {k: np.asarray(alpha * a[k].astype(np.float64) + (1 - alpha) * b[k], dtype=np.float32)
            if is_float(a[k]) else a[k].copy() for k in a}
