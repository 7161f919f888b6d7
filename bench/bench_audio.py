"""Audio (issue 16): a small federated audio run per SSL method against raw log-mel and random init.

Each method runs through Flower's local simulation (``launcher.simulation``) on the generated corpus
(``scripts/make_audio_corpus.py``, default size): ``NODES`` simulated devices, Dirichlet non-IID over
speakers/players (alpha 0.5), ``ROUNDS`` rounds of ``STEPS`` local steps, two devices per round. The
run's own per-round probes give the federated scores (kNN top-1 at k=200, the linear probe after the
last round) on every audio task beside the raw log-mel, random-init and BN-calibrated random-init
baselines. ``centralized:<method>`` trains one model in this process on the pooled train split for
as many steps as the federation made in all. A small budget on 2 shared cores: it says whether the
pipeline learns, not where it ends.

    python bench/bench_audio.py                       # simclr
    BENCH_AUDIO_METHODS=segment-order,simclr@ldawa,simclr@whole,centralized:simclr python bench/bench_audio.py
    BENCH_AUDIO_CORPUS=/path/to/corpus python bench/bench_audio.py

Writes ``bench/results/audio.json`` (methods already there are kept) and ``bench/results/audio.md``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import write_result  # noqa: E402
from fedssl.data.audio_corpus import CorpusSpec, make_corpus  # noqa: E402
from launcher.flwr_cli import AUDIO_RUN  # noqa: E402
from launcher.simulation import LocalSimulation  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NODES, ROUNDS, STEPS = 4, 3, 10
CONFIG = {**AUDIO_RUN, "num-rounds": ROUNDS, "fraction-train": 0.5, "train.max-steps": STEPS,
          "train.batch-size": 64, "data.max-samples": 512, "eval.gallery-size": 400, "eval.query-size": 200,
          "eval.linear-labels": 400, "data.partition": "dirichlet", "data.alpha": 0.5}


def centralized(method: str, corpus: Path) -> dict[str, Any]:
    """One model on the pooled train split, round by round: as many steps per round as the federation's
    2 devices made (``bench.centralized``, the federation's schedule)."""
    from bench.centralized import equal_steps, train_centralized
    from fedssl.audio.data import corpus_shard
    from fedssl.config import RunConfig
    from fedssl.modality import MODALITIES

    started = time.perf_counter()
    cfg = RunConfig.from_flat({**CONFIG, "ssl.method": method, "audio.corpus-dir": str(corpus),
                               "train.local-epochs": 100})
    model, results = train_centralized(cfg, corpus_shard(cfg, 0, 1), equal_steps(ROUNDS, 2, STEPS))
    modality = MODALITIES.get("audio")
    scores = modality.probe(model.backbone, modality.load_tasks(cfg), cfg, True)
    return {"method": f"centralized:{method}", "seconds": round(time.perf_counter() - started, 1),
            "federated": {"knn": scores.knn, "linear": scores.linear}, "steps": sum(r.steps for r in results),
            "loss": [r.loss for r in results], "schedule": "rounds"}


def run_method(sim: LocalSimulation, cell: str, corpus: Path) -> dict[str, Any]:
    """One run; ``cell`` is an SSL method, optionally with an aggregation rule (``simclr``, ``simclr@ldawa``)
    or ``@whole`` (FedAvg with ``transport-scope = model``: the heads travel too), or ``centralized:<method>``
    (this process, no Flower)."""
    if cell.startswith("centralized:"):
        return centralized(cell.split(":", 1)[1], corpus)
    method, _, rule = cell.partition("@")
    scope = {"transport-scope": "model"} if rule == "whole" else {}  # FedAvg of the whole model, heads included
    started = time.perf_counter()
    run_dir = sim.run({**CONFIG, "ssl.method": method, "aggregation.rule": rule if rule and not scope else "fedavg",
                       "audio.corpus-dir": str(corpus), **scope}, nodes=NODES)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = metrics["rounds"][-1]
    return {"method": cell, "seconds": round(time.perf_counter() - started, 1),
            "federated": {"knn": last["knn"], "linear": last.get("linear", {})},
            "best": {t: b["score"] for t, b in metrics["best"].items()},
            "baselines": metrics["baseline_probes"], "loss": [r["loss"] for r in metrics["rounds"]]}


def render(cells: list[dict[str, Any]]) -> str:
    lines = ["# Audio benchmark (issue 16)", "",
             f"{NODES} simulated devices (Dirichlet 0.5 over speakers/players), {ROUNDS} rounds x {STEPS} "
             "local steps of batch 64, 2 devices per round; generated corpus at its default size. "
             "kNN top-1 (k=200) / linear probe.",
             "", "| encoder | " + " | ".join(f"{t} kNN / linear" for t in TASKS) + " |",
             "|---|" + "---:|" * len(TASKS)]
    first = next(c for c in cells if "baselines" in c)
    for name in ("raw-log-mel", "random-init", "random-init-bn"):
        b = first["baselines"][name]
        lines.append(f"| {name} | " + " | ".join(f"{b['knn'][t]:.3f} / {b['linear'][t]:.3f}" for t in TASKS) + " |")
    for c in cells:
        f = c["federated"]
        kind = "" if c["method"].startswith("centralized:") else "federated "
        lines.append(f"| {kind}{c['method']} | "
                     + " | ".join(f"{f['knn'][t]:.3f} / {f['linear'].get(t, float('nan')):.3f}" for t in TASKS) + " |")
    lines += ["", "Command: `python bench/bench_audio.py` (BENCH_AUDIO_METHODS=" + ",".join(c["method"] for c in cells)
              + "); seconds per method: " + ", ".join(f"{c['method']} {c['seconds']}" for c in cells), ""]
    return "\n".join(lines)


TASKS = ("speech-words", "sound-pitch", "sound-timbre")


def main() -> int:
    methods = os.environ.get("BENCH_AUDIO_METHODS", "simclr").split(",")
    path = RESULTS / "audio.json"
    previous = json.loads(path.read_text())["cells"] if path.is_file() else []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(os.environ.get("BENCH_AUDIO_CORPUS", "") or Path(tmp) / "corpus")
        if not (corpus / "manifest.csv").is_file():
            make_corpus(corpus, CorpusSpec())
        with LocalSimulation(Path(tmp) / "sim") as sim:
            cells = [run_method(sim, m, corpus) for m in methods]
    cells = [c for c in previous if c["method"] not in methods] + cells
    write_result(path, {"config": CONFIG, "nodes": NODES, "cells": cells})
    (RESULTS / "audio.md").write_text(render(cells))
    print(render(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
