"""The record of one federated round, passed from the strategy to everything that reports it.

``server_app/strategy.py`` writes the training part when it aggregates a round;
``server_app/evaluation.py`` adds the probe scores and the round's wall time
(:meth:`RoundRecord.evaluated`); ``server_app/outputs.py`` stores it in ``metrics.json``,
``server_app/metrics_exporter.py`` exports it to Prometheus, and ``fedssl/summary.py`` and
``bench/`` read it back with :meth:`RoundRecord.from_dict`. A renamed field fails where it is
used, not at run time in one of the readers.

In ``metrics.json`` each round is :meth:`RoundRecord.to_dict` under ``rounds``; the file's
``schema_version`` is :data:`SCHEMA_VERSION` (files written before it had the same round keys).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
ClientReport = dict[str, float]  # "node_id" plus every metric of the reply contract (fedssl/reply.py)


@dataclass(frozen=True)
class Exclusion:
    """A reply left out of the aggregate, and why (``reason`` is one of ``server_app.screening.REASONS``)."""

    node_id: int
    partition_id: float  # -1 for a device with its own data
    reason: str
    detail: str


@dataclass(frozen=True)
class RoundRecord:
    """One round: sampling, replies, screening, aggregation, then evaluation.

    Counts: ``sampled`` nodes were asked to train out of ``available``; ``replied`` answered,
    ``failed`` did not (or sent an error); of the replies, ``accepted`` were aggregated and the
    rest are in ``excluded``. ``loss`` is the accepted replies' loss weighted by examples (NaN when
    none was accepted).
    """

    round: int
    sampled: int
    available: int
    replied: int = 0
    failed: int = 0
    accepted: int = 0
    clipped: int = 0  # accepted updates whose step was scaled down to the round's norm bound
    excluded: tuple[Exclusion, ...] = ()
    loss: float = float("nan")
    num_examples: float = 0.0
    clients: tuple[ClientReport, ...] = ()
    bytes_received: int = 0
    aggregation_seconds: float = 0.0
    # Evaluation, after aggregation (empty until :meth:`evaluated`).
    knn: dict[str, float] = field(default_factory=dict)  # kNN top-1 at eval.knn-k per probe task
    knn_report: dict[str, float] = field(default_factory=dict)  # kNN top-1 at eval.report-k
    linear: dict[str, float] = field(default_factory=dict)  # linear probe top-1 (last round only)
    knn_centred: dict[str, float] = field(default_factory=dict)  # kNN at eval.knn-k on centred embeddings
    retrieval_top5: dict[str, float] = field(default_factory=dict)  # retrieval top-5 (video tasks; else empty)
    eval_seconds: float = 0.0
    seconds: float = 0.0  # the whole round, wall time

    def evaluated(self, knn: Mapping[str, float], knn_report: Mapping[str, float], linear: Mapping[str, float],
                  eval_seconds: float, seconds: float, knn_centred: Mapping[str, float] | None = None,
                  retrieval_top5: Mapping[str, float] | None = None) -> RoundRecord:
        """This round with its probe scores and timings added."""
        return replace(self, knn=dict(knn), knn_report=dict(knn_report), linear=dict(linear),
                       eval_seconds=eval_seconds, seconds=seconds, knn_centred=dict(knn_centred or {}),
                       retrieval_top5=dict(retrieval_top5 or {}))

    def to_dict(self) -> dict[str, Any]:
        """The round as ``metrics.json`` stores it (lists, plain dicts)."""
        out = asdict(self)
        out["excluded"] = [dict(e) for e in out["excluded"]]
        out["clients"] = [dict(c) for c in out["clients"]]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundRecord:
        """Read a round of ``metrics.json`` back (keys this version does not know are ignored).

        Raises:
            ValueError: naming the missing keys if ``round``, ``sampled`` or ``available`` is missing.
        """
        missing = [k for k in ("round", "sampled", "available") if k not in data]
        if missing:
            raise ValueError(f"a round of metrics.json lacks {missing}")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["excluded"] = tuple(Exclusion(**e) for e in data.get("excluded", ()))
        kwargs["clients"] = tuple(dict(c) for c in data.get("clients", ()))
        return cls(**kwargs)


def read_metrics(run_dir: Path) -> tuple[dict[str, Any], list[RoundRecord]]:
    """A run's ``metrics.json`` and its rounds as records.

    Raises:
        FileNotFoundError: if the run wrote no ``metrics.json``.
    """
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    return metrics, [RoundRecord.from_dict(r) for r in metrics["rounds"]]
