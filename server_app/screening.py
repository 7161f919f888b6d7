"""Server-side screening of client updates: every check a reply passes before it is aggregated.

Validation (metrics contract, keys, shapes, dtypes, NaN/Inf), the collapse filter (``z_std`` and
RankMe floors) and the norm-outlier check against the round's median. A rejected update never
touches the global model; its reason (a bounded set, also a Prometheus label) is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedssl import reply
from fedssl.config import FilterConfig

# Reasons, also used as Prometheus label values (bounded set).
MISSING_KEYS, EXTRA_KEYS, SHAPE, DTYPE, NAN, NORM, METRICS, COLLAPSE = (
    "missing-keys", "extra-keys", "shape", "dtype", "nan", "norm", "metrics", "collapse")
SKIPPED = "skipped"
REASONS = (MISSING_KEYS, EXTRA_KEYS, SHAPE, DTYPE, NAN, NORM, METRICS, COLLAPSE, SKIPPED)


class RejectedUpdate(Exception):
    """A client update the server refuses to aggregate, with a machine-readable ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DecodedOnAccess(Mapping[str, np.ndarray]):
    """A reply's arrays, decoded one key at a time when read (float16 widened to float32).

    The server keeps no decoded copy of any update: screening and aggregation read
    each key when they need it, so beyond the replies Flower holds, memory is O(model).
    ``record`` is anything whose items have ``.numpy()`` (a Flower ``ArrayRecord``).
    """

    def __init__(self, record: Mapping[str, Any]) -> None:
        self._record = record

    def __getitem__(self, key: str) -> np.ndarray:
        value = self._record[key].numpy()
        return value.astype(np.float32) if value.dtype == np.float16 else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._record)

    def __len__(self) -> int:
        return len(self._record)


@dataclass
class ClientUpdate:
    node_id: int
    arrays: Mapping[str, np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)
    norm: float = 0.0  # L2 size of the step from the global model

    @property
    def num_examples(self) -> float:
        return self.metrics.get(reply.NUM_EXAMPLES, 0.0)

    @property
    def loss(self) -> float:
        return self.metrics.get(reply.LOSS, 0.0)


def check_structure(arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """Same keys, shapes and kinds of dtype as the global model; finite values.

    float16 is accepted for float32 entries (half-precision transport).
    Returns:
        the update norm, L2 of ``arrays - reference`` over floating entries (float32 per key: precise
        enough for a ratio-to-median test), taken in the same read of each array: reading a reply's
        array decodes it, the costly part of screening.
    Raises:
        RejectedUpdate: with the first problem found.
    """
    missing = sorted(set(reference) - set(arrays))
    if missing:
        raise RejectedUpdate(MISSING_KEYS, f"{len(missing)} missing, e.g. {missing[:3]}")
    extra = sorted(set(arrays) - set(reference))
    if extra:
        raise RejectedUpdate(EXTRA_KEYS, f"{len(extra)} unexpected, e.g. {extra[:3]}")
    squared = 0.0
    for key, ref in reference.items():
        value = arrays[key]
        if value.shape != ref.shape:
            raise RejectedUpdate(SHAPE, f"{key}: {value.shape} != {ref.shape}")
        same_kind = np.issubdtype(value.dtype, np.floating) == np.issubdtype(ref.dtype, np.floating)
        if not same_kind or (not np.issubdtype(ref.dtype, np.floating) and value.dtype != ref.dtype):
            raise RejectedUpdate(DTYPE, f"{key}: {value.dtype} where {ref.dtype} is expected")
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise RejectedUpdate(NAN, f"{key} holds NaN or Inf")
        if np.issubdtype(ref.dtype, np.floating):
            squared += _squared_step(value, ref)
    return squared ** 0.5


def check_metrics(metrics: Mapping[str, float]) -> None:
    """Every contract key present and finite.

    Raises:
        RejectedUpdate: naming the bad keys.
    """
    missing = [k for k in reply.METRIC_KEYS if k not in metrics]
    if missing:
        raise RejectedUpdate(METRICS, f"missing metric(s) {missing}")
    bad = [k for k in reply.METRIC_KEYS if not np.isfinite(metrics[k])]
    if bad:
        raise RejectedUpdate(NAN, f"non-finite metric(s) {bad}")


def _squared_step(value: np.ndarray, ref: np.ndarray) -> float:
    diff = np.subtract(value, ref, dtype=np.float32)
    return float(np.vdot(diff, diff))


def check_norms(norms: Mapping[int, float], max_ratio: float) -> dict[int, RejectedUpdate]:
    """Reject updates whose norm is more than ``max_ratio`` times the round's median norm."""
    if len(norms) < 3:  # a median of two says nothing about which one is the outlier
        return {}
    median = float(np.median(list(norms.values())))
    limit = max_ratio * max(median, 1e-12)
    return {node: RejectedUpdate(NORM, f"update norm {n:.3g} > {max_ratio:g} x median {median:.3g}")
            for node, n in norms.items() if n > limit}


def check_collapse(metrics: Mapping[str, float], cfg: FilterConfig, embedding_dim: int) -> None:
    """The collapse filter: reject a reply whose ``z_std`` or ``rankme / dim`` is below the configured floor.

    Healthy embeddings have ``z_std`` near 1 and a RankMe that is a fair share of the dimension; a
    collapsed encoder (every image the same embedding) has both near 0 and 1.
    Raises:
        RejectedUpdate: with reason ``collapse`` and the offending figure.
    """
    if not cfg.enabled:
        return
    if metrics[reply.Z_STD] < cfg.min_z_std:
        raise RejectedUpdate(COLLAPSE, f"z_std {metrics[reply.Z_STD]:.3f} < {cfg.min_z_std}")
    ratio = metrics[reply.RANKME] / embedding_dim
    if ratio < cfg.min_rankme_ratio:
        raise RejectedUpdate(COLLAPSE, f"rankme/dim {ratio:.3f} < {cfg.min_rankme_ratio}")
