"""Server-side evaluation after every round: kNN on probe tasks, best model per task, outputs.

Flower calls this as ``evaluate_fn`` once before round 1 (we then measure the
raw-pixel and random-init baselines) and after every round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Protocol

import numpy as np
from flwr.app import ArrayRecord, MetricRecord
from flwr.common.logger import log

from fedssl.config import RunConfig
from fedssl.modality import MODALITIES
from fedssl.probe import ProbeScores, ProbeTask
from fedssl.round_record import RoundRecord
from fedssl.state import strip_prefix, to_torch
from server_app.outputs import RunOutputs
from server_app.strategy import FedSSL

CALIBRATED = "random-init-bn"  # the random-init encoder with BatchNorm statistics estimated on probe images


class RoundObserver(Protocol):
    """Told about every closed round (the Prometheus exporter is one)."""

    def observe_round(self, record: RoundRecord, best: Mapping[str, Mapping[str, float]],
                      baselines: Mapping[str, Mapping[str, float]]) -> None:
        """``best``: per task ``{"round", "score"}``; ``baselines``: per baseline, kNN top-1 per task."""


class RoundEvaluator:
    """``evaluate_fn`` for ``Strategy.start``: scores the global backbone and closes the round's record."""

    def __init__(self, cfg: RunConfig, strategy: FedSSL, outputs: RunOutputs, tasks: list[ProbeTask],
                 observers: list[RoundObserver] | None = None, total: int | None = None) -> None:
        self.cfg = cfg
        self.total = total or cfg.num_rounds  # rounds (full mode) or steps (split mode) in the run
        self.strategy = strategy
        self.outputs = outputs
        self.tasks = tasks
        self.observers = observers or []
        self.modality = MODALITIES.get(cfg.data.modality)

    def score(self, arrays: dict[str, np.ndarray], linear: bool, calibrate: bool = False) -> ProbeScores:
        backbone = self.modality.build_backbone(self.cfg)
        backbone.load_state_dict(strip_prefix(to_torch(arrays)), strict=True)
        if calibrate:  # BatchNorm statistics from the first task's unlabeled gallery
            self.modality.calibrate(backbone, self.tasks[0].gallery, self.cfg)
        return self.modality.probe(backbone, self.tasks, self.cfg, linear)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        np_arrays = {k: v.numpy() for k, v in arrays.items()}
        if server_round == 0:
            return self._baselines(np_arrays)
        started = time.perf_counter()
        trained = self.strategy.round_record(server_round)
        last = trained.round >= self.total
        probes = self.score(np_arrays, linear=last)  # the linear probe costs seconds: final round only
        record = trained.evaluated(probes.knn, probes.knn_report, probes.linear,
                                   eval_seconds=time.perf_counter() - started,
                                   seconds=time.perf_counter() - self.strategy.round_started,
                                   knn_centred=probes.knn_centred, retrieval_top5=probes.retrieval_top5)
        improved = self.outputs.record_round(record, np_arrays, self.strategy.state())
        knn = "  ".join(f"{t}={s:.4f}{'*' if t in improved else ''}" for t, s in record.knn.items())
        log(logging.INFO, "[fedssl] round %d/%d  loss=%.4f  clients %d/%d accepted (%d excluded, %d failed)  "
            "kNN %s%s  %.1fs", record.round, self.total, record.loss, record.accepted,
            record.sampled, len(record.excluded), record.failed, knn, _top5(record.retrieval_top5), record.seconds)
        for observer in self.observers:
            observer.observe_round(record, best=self.outputs.metrics["best"],
                                   baselines=self.outputs.metrics["baselines"])
        return MetricRecord({**{f"knn-{t}": s for t, s in record.knn.items()},
                             **{f"top5-{t}": s for t, s in record.retrieval_top5.items()}})

    def _baselines(self, initial: dict[str, np.ndarray]) -> MetricRecord:
        baselines = self.outputs.metrics["baselines"]
        if not baselines:  # a resumed run keeps the ones measured at its start
            details = self.outputs.metrics["baseline_probes"]
            raw_name = self.modality.raw_baseline  # raw-pixels, raw-log-mel
            raw, random_init = self.modality.probe_raw(self.tasks, self.cfg, True), self.score(initial, linear=True)
            baselines[raw_name], details[raw_name] = raw.knn, raw.as_dict()
            baselines["random-init"], details["random-init"] = random_init.knn, random_init.as_dict()
            calibrated = self.score(initial, linear=True, calibrate=True)
            baselines[CALIBRATED], details[CALIBRATED] = calibrated.knn, calibrated.as_dict()
            # The starting encoder is the first candidate for every task's best model: a shipped
            # model is never worse (on its probe) than where training started.
            self.outputs.record_initial(initial, random_init.knn)
            self.outputs.write_metrics()
        for name, scores in baselines.items():
            top5 = self.outputs.metrics["baseline_probes"].get(name, {}).get("retrieval_top5", {})
            log(logging.INFO, "[fedssl] baseline %-11s kNN %s%s", name,
                "  ".join(f"{t}={s:.4f}" for t, s in scores.items()), _top5(top5))
        return MetricRecord({f"{n}-{t}": s for n, sc in baselines.items() for t, s in sc.items()})


def _top5(scores: Mapping[str, float]) -> str:
    """The console line's retrieval top-5 part (empty for tasks without it)."""
    return "  top-5 " + "  ".join(f"{t}={s:.4f}" for t, s in scores.items()) if scores else ""
