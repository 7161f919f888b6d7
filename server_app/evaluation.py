"""Server-side evaluation after every round: kNN on probe tasks, best model per task, outputs.

Flower calls this as ``evaluate_fn`` once before round 1 (we then measure the
raw-pixel and random-init baselines) and after every round.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, MetricRecord
from flwr.common.logger import log

from fedssl.config import RunConfig
from fedssl.models.encoders import build_encoder
from fedssl.probe import ProbeScores, ProbeTask, probe_backbone, probe_pixels
from fedssl.state import strip_prefix, to_torch
from server_app.outputs import RunOutputs
from server_app.strategy import FedSSL


class RoundEvaluator:
    """``evaluate_fn`` for ``Strategy.start``: scores the global backbone and closes the round's record."""

    def __init__(self, cfg: RunConfig, strategy: FedSSL, outputs: RunOutputs, tasks: list[ProbeTask],
                 observers: list[Any] | None = None) -> None:
        self.cfg = cfg
        self.strategy = strategy
        self.outputs = outputs
        self.tasks = tasks
        self.observers = observers or []

    def score(self, arrays: dict[str, np.ndarray], linear: bool) -> ProbeScores:
        backbone = build_encoder(self.cfg.model)
        backbone.load_state_dict(strip_prefix(to_torch(arrays)), strict=True)
        return probe_backbone(backbone, self.tasks, self.cfg.model, self.cfg.eval, linear=linear)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        np_arrays = {k: v.numpy() for k, v in arrays.items()}
        if server_round == 0:
            return self._baselines(np_arrays)
        started = time.perf_counter()
        entry = self.strategy.round_entry
        last = entry["round"] >= self.cfg.num_rounds
        probes = self.score(np_arrays, linear=last)  # the linear probe costs seconds: final round only
        scores = probes.knn
        entry.update({"knn": scores, "knn_report": probes.knn_report, "eval_seconds": time.perf_counter() - started,
                      "seconds": time.perf_counter() - self.strategy.round_started})
        if probes.linear:
            entry["linear"] = probes.linear
        improved = self.outputs.record_round(entry, np_arrays, self.strategy.state())
        knn = "  ".join(f"{t}={s:.4f}{'*' if t in improved else ''}" for t, s in scores.items())
        log(logging.INFO, "[fedssl] round %d/%d  loss=%.4f  clients %d/%d accepted (%d excluded, %d failed)  "
            "kNN %s  %.1fs", entry["round"], self.cfg.num_rounds, entry["loss"], entry["accepted"],
            entry["sampled"], len(entry["excluded"]), entry["failed"], knn, entry["seconds"])
        for observer in self.observers:
            observer.observe_round(entry, self.outputs.metrics)
        return MetricRecord({f"knn-{t}": s for t, s in scores.items()})

    def _baselines(self, initial: dict[str, np.ndarray]) -> MetricRecord:
        baselines = self.outputs.metrics["baselines"]
        if not baselines:  # a resumed run keeps the ones measured at its start
            details = self.outputs.metrics["baseline_probes"]
            pixels, random_init = probe_pixels(self.tasks, self.cfg.eval), self.score(initial, linear=True)
            baselines["raw-pixels"], details["raw-pixels"] = pixels.knn, pixels.as_dict()
            baselines["random-init"], details["random-init"] = random_init.knn, random_init.as_dict()
            # The starting encoder is the first candidate for every task's best model: a shipped
            # model is never worse (on its probe) than where training started.
            self.outputs.record_initial(initial, random_init.knn)
            self.outputs.write_metrics()
        for name, scores in baselines.items():
            log(logging.INFO, "[fedssl] baseline %-11s kNN %s", name,
                "  ".join(f"{t}={s:.4f}" for t, s in scores.items()))
        return MetricRecord({f"{n}-{t}": s for n, sc in baselines.items() for t, s in sc.items()})
