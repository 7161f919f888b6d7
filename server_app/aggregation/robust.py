"""Flower's robust aggregators (median, trimmed mean, Krum) applied to backbone arrays.

Reused from ``flwr.server.strategy.aggregate`` rather than rewritten; they take
lists of arrays in a fixed key order, which we restore to dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.server.strategy.aggregate import aggregate_krum, aggregate_median, aggregate_trimmed_avg

from server_app.aggregation.base import Arrays


def _as_lists(updates: Sequence[Mapping[str, np.ndarray]], num_examples: Sequence[float]):
    """Every update at once (these rules need them all), kept in its own dtype: no float64 copies."""
    keys = list(updates[0])
    results = [([u[k] for k in keys], int(n)) for u, n in zip(updates, num_examples)]
    return keys, results


def _as_dict(keys: list[str], arrays: list[np.ndarray], like: Mapping[str, np.ndarray]) -> Arrays:
    return {k: np.array(a, dtype=np.float32 if np.issubdtype(like[k].dtype, np.floating) else like[k].dtype)
            for k, a in zip(keys, arrays)}


def fedmedian(updates, num_examples, losses, previous) -> Arrays:
    """Coordinate-wise median (FedMedian, arXiv:1803.01498)."""
    keys, results = _as_lists(updates, num_examples)
    return _as_dict(keys, aggregate_median(results), updates[0])


def trimmed_mean(updates, num_examples, losses, previous, trim_fraction: float = 0.2) -> Arrays:
    """Coordinate-wise mean after cutting ``trim_fraction`` from each end (arXiv:1803.01498)."""
    keys, results = _as_lists(updates, num_examples)
    return _as_dict(keys, aggregate_trimmed_avg(results, trim_fraction), updates[0])


def krum(updates, num_examples, losses, previous, num_malicious: int = 1) -> Arrays:
    """The update closest to its neighbours (Krum, NeurIPS 2017)."""
    keys, results = _as_lists(updates, num_examples)
    return _as_dict(keys, aggregate_krum(results, num_malicious, to_keep=0), updates[0])
