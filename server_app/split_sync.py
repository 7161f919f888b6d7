"""Averaging the devices' stems at the end of a sync period, screened as full mode screens its updates.

Each sync reply passes the same checks a full-mode update does (``server_app/screening.py``:
keys, shapes, dtypes, NaN/Inf, norm outliers against the period's median) before the configured
aggregation rule (``aggregation.rule``) averages the accepted stems, weighted by the images each
device stepped on. The collapse filter does not apply: a stem has no embedding of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Message
from flwr.common.logger import log

from fedssl.round_record import ClientReport, Exclusion
from fedssl.split import protocol as p
from server_app.aggregation.base import Rule
from server_app.screening import (
    METRICS,
    SKIPPED,
    ClientUpdate,
    DecodedOnAccess,
    RejectedUpdate,
    check_norms,
    check_structure,
)


@dataclass
class SyncResult:
    """The new average of the stems and what happened to every reply."""

    stems: dict[str, np.ndarray]
    accepted: int = 0
    excluded: list[Exclusion] = field(default_factory=list)
    clients: list[ClientReport] = field(default_factory=list)
    bytes_received: int = 0


def average_stems(replies: list[Message], current: dict[str, np.ndarray], rule: Rule,
                  max_norm_ratio: float) -> SyncResult:
    """Screen the sync replies and average the accepted stems; ``current`` stays if none is accepted."""
    candidates: list[ClientUpdate] = []
    result = SyncResult(stems=current)
    for msg in replies:
        node = msg.metadata.src_node_id
        metrics = {k: float(v) for k, v in msg.content.metric_records.get(p.METRICS, {}).items()}
        result.clients.append({"node_id": node, **metrics})
        if p.STEMS in msg.content.array_records:
            result.bytes_received += msg.content[p.STEMS].count_bytes()
        try:
            candidates.append(_parse(node, msg, metrics, current))
        except RejectedUpdate as rejected:
            result.excluded.append(_exclusion(node, metrics, rejected))
    outliers = check_norms({u.node_id: u.norm for u in candidates}, max_norm_ratio)
    result.excluded += [_exclusion(u.node_id, u.metrics, outliers[u.node_id]) for u in candidates
                        if u.node_id in outliers]
    accepted = [u for u in candidates if u.node_id not in outliers]
    for exclusion in result.excluded:
        log(logging.WARNING, "split sync: excluded node %s (%s): %s", exclusion.node_id, exclusion.reason,
            exclusion.detail)
    if accepted:
        result.stems = rule([u.arrays for u in accepted], [u.num_examples for u in accepted],
                            [0.0] * len(accepted), current)
    result.accepted = len(accepted)
    return result


def _parse(node: int, msg: Message, metrics: dict[str, float], current: dict[str, np.ndarray]) -> ClientUpdate:
    missing = [k for k in p.SYNC_METRIC_KEYS if k not in metrics]
    if missing:
        raise RejectedUpdate(METRICS, f"missing metric(s) {missing}")
    if not all(np.isfinite(metrics[k]) for k in p.SYNC_METRIC_KEYS):
        raise RejectedUpdate(METRICS, "non-finite metric(s)")
    if metrics[p.NUM_EXAMPLES] <= 0:
        raise RejectedUpdate(SKIPPED, "the device stepped on no images this period")
    if p.STEMS not in msg.content.array_records:
        raise RejectedUpdate("missing-keys", "reply carries no stems")
    arrays = DecodedOnAccess(msg.content[p.STEMS])
    norm = check_structure(arrays, current)
    return ClientUpdate(node, arrays, metrics, norm)


def _exclusion(node: int, metrics: dict[str, float], rejected: RejectedUpdate) -> Exclusion:
    return Exclusion(node_id=node, partition_id=metrics.get(p.PARTITION_ID, -1), reason=rejected.reason,
                     detail=rejected.detail)
