"""Validation of a reply's metrics: every field typed, finite and within what the round's config allows.

A reply's metrics decide how much its update weighs (``num-examples``, ``loss``) and whether it is
trusted (``z-std``, ``rankme``), so none is used before it is checked here. The bounds follow from the
run config every device trains with (``fedssl/train.py``): a device runs at most ``train.max-steps``
steps (and at most ``local-epochs x max(1, max-samples // batch-size)``), each of at most
``train.batch-size`` images, so ``num-examples <= steps x batch-size``; a device embeds at most
``COLLAPSE_SAMPLE`` images for its collapse check, so ``rankme <= min(that, embedding-dim)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedssl import reply
from fedssl.config import RunConfig
from fedssl.train import COLLAPSE_SAMPLE
from server_app.screening import BOUNDS, METRICS, NAN, SKIPPED, RejectedUpdate

Z_STD_MAX = 1.5  # z_std <= sqrt(n / (n - 1)) for unit vectors (<= 1.42 at n = 2): anything above is made up
LOSS_MAX = 1e4  # |loss| of every SSL objective here stays far below (Barlow Twins, the largest, ~600 at start)


@dataclass(frozen=True)
class ReplyBounds:
    """What an honest reply of this run can claim, derived once from the run config."""

    batch_size: int
    max_steps: int  # 0: no cap (a device with its own data and no train.max-steps)
    max_examples: int  # 0: no cap
    max_rankme: float

    @classmethod
    def from_config(cls, cfg: RunConfig) -> ReplyBounds:
        train = cfg.train
        caps = [train.max_steps] if train.max_steps else []
        if cfg.data.max_samples:
            caps.append(train.local_epochs * max(1, cfg.data.max_samples // train.batch_size))
        max_examples = train.local_epochs * cfg.data.max_samples if cfg.data.max_samples else 0
        return cls(batch_size=train.batch_size, max_steps=min(caps) if caps else 0, max_examples=max_examples,
                   max_rankme=float(min(COLLAPSE_SAMPLE, cfg.model.embedding_dim)))


def read_metrics(record: Mapping[str, Any] | None) -> dict[str, float]:
    """The contract's metrics as floats, every one a real number (not a list, bool or string).

    Raises:
        RejectedUpdate: ``metrics`` for a missing key or a value of the wrong type, ``nan`` for NaN/Inf.
    """
    if record is None:
        raise RejectedUpdate(METRICS, f"reply carries no metric record {reply.METRICS!r}")
    missing = [k for k in reply.METRIC_KEYS if k not in record]
    if missing:
        raise RejectedUpdate(METRICS, f"missing metric(s) {missing}")
    wrong = {k: type(record[k]).__name__ for k in reply.METRIC_KEYS
             if isinstance(record[k], bool) or not isinstance(record[k], (int, float))}
    if wrong:
        raise RejectedUpdate(METRICS, f"metric(s) not a number: {wrong}")
    try:
        values = {k: float(record[k]) for k in reply.METRIC_KEYS}
    except OverflowError as exc:  # an int beyond any float
        raise RejectedUpdate(BOUNDS, f"a metric does not fit a float: {exc}") from None
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise RejectedUpdate(NAN, f"non-finite metric(s) {bad}")
    return values


def check_metrics(metrics: Mapping[str, float], bounds: ReplyBounds) -> None:
    """Signs, integrality and the round's bounds of a trained reply's metrics (``read_metrics`` first).

    Raises:
        RejectedUpdate: ``skipped`` for a reply that did not train, ``bounds`` naming the first bad field.
    """
    if metrics[reply.SKIPPED] not in (0.0, 1.0):
        raise RejectedUpdate(BOUNDS, f"{reply.SKIPPED} = {metrics[reply.SKIPPED]!r} is not 0 or 1")
    if metrics[reply.SKIPPED]:
        raise RejectedUpdate(SKIPPED, "client had too little data to train")
    steps, n = metrics[reply.STEPS], metrics[reply.NUM_EXAMPLES]
    _integer(reply.STEPS, steps, 1, bounds.max_steps or None)
    _integer(reply.NUM_EXAMPLES, n, 1, steps * bounds.batch_size)
    if bounds.max_examples:
        _integer(reply.NUM_EXAMPLES, n, 1, bounds.max_examples)
    _between(reply.LOSS, metrics[reply.LOSS], -LOSS_MAX, LOSS_MAX)
    _between(reply.Z_STD, metrics[reply.Z_STD], 0.0, Z_STD_MAX)
    _between(reply.RANKME, metrics[reply.RANKME], 0.0, bounds.max_rankme + 1.0)
    for key in (reply.SECONDS, reply.EXAMPLES_PER_S, reply.PEAK_MEM_MB):
        _between(key, metrics[key], 0.0, None)
    _integer(reply.NUM_PARTITIONS, metrics[reply.NUM_PARTITIONS], 0, None)
    partitions = metrics[reply.NUM_PARTITIONS]
    _integer(reply.PARTITION_ID, metrics[reply.PARTITION_ID], -1, partitions - 1 if partitions else None)
    # What the device chose (0: not reported): never a batch above the run's, 16- or 32-bit arithmetic.
    _integer(reply.DEVICE_BATCH_SIZE, metrics[reply.DEVICE_BATCH_SIZE], 0, bounds.batch_size)
    if metrics[reply.DEVICE_PRECISION_BITS] not in (0.0, 16.0, 32.0):
        raise RejectedUpdate(BOUNDS, f"{reply.DEVICE_PRECISION_BITS} = {metrics[reply.DEVICE_PRECISION_BITS]!r} "
                                     "is not 16 or 32")
    _integer(reply.DEVICE_THREADS, metrics[reply.DEVICE_THREADS], 0, None)
    _between(reply.DEVICE_MEMORY_MB, metrics[reply.DEVICE_MEMORY_MB], 0.0, None)


def partition_of(record: Mapping[str, Any] | None) -> float:
    """A reply's partition id for the record of its exclusion: -1 unless it is a sane integer."""
    value = (record or {}).get(reply.PARTITION_ID, -1.0)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok and float(value).is_integer() and -1 <= value < 2**31 else -1.0


def scalar_report(record: Mapping[str, Any] | None) -> dict[str, float]:
    """The finite numeric metrics of a reply, whatever else it sent: what ``metrics.json`` shows of it."""
    out = {}
    for key, value in (record or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[key] = float(value)
    return out


def _between(key: str, value: float, low: float, high: float | None) -> None:
    if value < low or (high is not None and value > high):
        raise RejectedUpdate(BOUNDS, f"{key} = {value:.6g} outside [{low:g}, {'inf' if high is None else f'{high:g}'}]")


def _integer(key: str, value: float, low: float, high: float | None) -> None:
    if not value.is_integer():
        raise RejectedUpdate(BOUNDS, f"{key} = {value!r} is not a whole number")
    _between(key, value, low, high)
