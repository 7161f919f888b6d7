"""Everything a run leaves in ``outputs/<run-id>/``, written atomically after every round.

``metrics.json`` (per round and baselines), ``checkpoint.pt`` (to resume),
``encoder.pt`` (final backbone + export metadata), ``best/<task>.pt`` and
``knn.png``. A crash loses at most the round in flight.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedssl.atomic import atomic_write_json
from fedssl.checkpoint import atomic_torch_save, save_encoder
from fedssl.config import RunConfig
from fedssl.modality import MODALITIES
from fedssl.plot import plot_knn
from fedssl.round_record import SCHEMA_VERSION, RoundRecord
from fedssl.state import strip_prefix, to_torch

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"


def event(status: str, flower_run_id: int, round: int) -> dict[str, Any]:
    """One entry of ``metrics.json``'s ``events``: a status change of the run, with the Flower run doing it."""
    return {"status": status, "at": time.time(), "flower_run_id": int(flower_run_id), "round": round}


class RunOutputs:
    """The run folder and the history written into it."""

    def __init__(self, root: Path, run_id: int, cfg: RunConfig) -> None:
        self.root = root
        self.cfg = cfg
        self.flower_run_id = run_id  # this ServerApp's run; a resumed run keeps its first run's "run_id"
        self.metrics: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "run_id": str(run_id), "status": "running", "started": time.time(),
            "config": cfg.to_flat(),
            "baselines": {}, "baseline_probes": {}, "rounds": [], "best": {},
            "events": [event("started", run_id, 0)],
        }

    # --- resume -------------------------------------------------------------
    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last completed round's state, or None for a fresh run.

        Raises:
            ValueError: if the checkpoint cannot be read.
        """
        path = self.root / CHECKPOINT
        if not path.is_file():
            return None
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ValueError(f"cannot resume: {path} is unreadable ({exc})") from exc
        self.metrics.update({k: ckpt["metrics"][k] for k in ("baselines", "rounds", "best", "run_id", "started")})
        self.metrics["baseline_probes"] = ckpt["metrics"].get("baseline_probes", {})
        history = {**ckpt["metrics"], **self._history_on_disk()}  # a supervisor may have noted a failure since
        self.metrics["events"] = [*history.get("events", []), event("resumed", self.flower_run_id, ckpt["round"])]
        self.metrics["resumed_at_round"] = [*history.get("resumed_at_round", []), ckpt["round"]]
        self.metrics["status"] = "running"
        self.write_metrics()
        return ckpt

    def _history_on_disk(self) -> dict[str, Any]:
        """``events`` and ``resumed_at_round`` of ``metrics.json`` as last written (empty if unreadable)."""
        try:
            on_disk = json.loads((self.root / METRICS).read_text())
        except (OSError, ValueError):
            return {}
        return {k: on_disk[k] for k in ("events", "resumed_at_round") if isinstance(on_disk.get(k), list)}

    # --- per round ----------------------------------------------------------
    def record_initial(self, arrays: dict[str, np.ndarray], scores: dict[str, float]) -> None:
        """Round 0: the initial encoder becomes every task's best model until a round beats it."""
        for task, score in scores.items():
            self.metrics["best"][task] = {"round": 0, "score": score}
            self.save_encoder(self.root / "best" / f"{task}.pt", arrays, round=0, task=task, knn_top1=score)

    def record_round(self, record: RoundRecord, arrays: dict[str, np.ndarray],
                     extra_state: dict[str, Any]) -> list[str]:
        """Append a round, update best-per-task, write checkpoint and metrics; returns improved tasks."""
        self.metrics["rounds"].append(record.to_dict())
        improved = []
        for task, score in record.knn.items():
            best = self.metrics["best"].get(task)
            if best is None or score > best["score"]:
                self.metrics["best"][task] = {"round": record.round, "score": score}
                self.save_encoder(self.root / "best" / f"{task}.pt", arrays, round=record.round,
                                  task=task, knn_top1=score)
                improved.append(task)
        atomic_torch_save(self.root / CHECKPOINT, {
            "round": record.round, "arrays": arrays, "metrics": self.metrics, **extra_state})
        self.write_metrics()
        return improved

    def write_metrics(self) -> None:
        atomic_write_json(self.root / METRICS, self.metrics)

    # --- end of run ---------------------------------------------------------
    def save_encoder(self, path: Path, arrays: dict[str, np.ndarray], **extra: Any) -> None:
        save_encoder(path, strip_prefix(to_torch(arrays)), self.cfg.model, run_id=self.metrics["run_id"],
                     ssl_method=self.cfg.ssl.method, **MODALITIES.get(self.cfg.data.modality).checkpoint_meta(self.cfg),
                     **extra)

    def finish(self, arrays: dict[str, np.ndarray]) -> None:
        rounds = self.metrics["rounds"]
        last = RoundRecord.from_dict(rounds[-1]) if rounds else RoundRecord(round=0, sampled=0, available=0)
        self.save_encoder(self.root / "encoder.pt", arrays, round=last.round, knn=last.knn)
        self.metrics["status"] = "completed"
        self.metrics["finished"] = time.time()
        self.metrics["events"].append(event("completed", self.flower_run_id, last.round))
        self.write_metrics()
        plot_knn(self.metrics, self.root / "knn.png")

    def best_summary(self) -> str:
        """One line: which round each task's shipped model (``best/<task>.pt``) comes from."""
        return "  ".join(f"{task}: round {best['round']} ({best['score']:.4f})"
                         for task, best in self.metrics["best"].items())
