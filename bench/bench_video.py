"""Video (issue 17): does a video SSL method beat raw pixels and random init on the motion and object probes?

Centralized, in this process, on the generated clip corpus (``scripts/make_video_corpus.py``, default
size: 320 train + 120 test clips): each method trains r3d-tiny on the pooled train split for
``BENCH_VIDEO_STEPS`` steps of ``train.batch-size`` clips (``launcher.flwr_cli.VIDEO_RUN``'s
settings), then the server's probes score it beside the raw-pixel, random-init and BN-calibrated
random-init baselines: weighted kNN at k=10 (``knn``), top-1 nearest-neighbour clip retrieval
(``top1``, ``eval.report-k = 1``), top-5 clip retrieval (``top5``: a hit if any of the 5 nearest train
clips has the label) and the linear probe, on the test split's clips against the train split's. A
small budget on 2 shared cores (~5 minutes for SimCLR): it says whether the pipeline learns motion,
not where it ends. Federated figures come from ``fedssl-launch run --video``.

    python bench/bench_video.py                                   # simclr
    BENCH_VIDEO_METHODS=simclr,playback-speed,catch-the-patch BENCH_VIDEO_STEPS=200 python bench/bench_video.py
    BENCH_VIDEO_METHODS= python bench/bench_video.py             # the baselines only (seconds)

Writes ``bench/results/video.json`` (methods already there are kept).
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
from fedssl.data.video_corpus import CorpusSpec, make_corpus  # noqa: E402
from launcher.flwr_cli import VIDEO_RUN  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STEPS = int(os.environ.get("BENCH_VIDEO_STEPS", "120"))
CONFIG = {**VIDEO_RUN, "train.max-steps": STEPS, "train.local-epochs": 1000, "train.schedule": "constant",
          "data.max-samples": 0, "eval.linear-labels": 320, "data.partition": "iid"}  # one "device" holds every clip


def scores(probe) -> dict[str, dict[str, float]]:
    return {"knn": probe.knn, "top1": probe.knn_report, "top5": probe.retrieval_top5, "linear": probe.linear}


def run(method: str, corpus: Path) -> dict[str, Any]:
    from bench.centralized import train_centralized
    from fedssl.config import RunConfig
    from fedssl.modality import MODALITIES
    from fedssl.video.data import corpus_shard

    cfg = RunConfig.from_flat({**CONFIG, "ssl.method": method, "video.corpus-dir": str(corpus)})
    modality = MODALITIES.get("video")
    tasks = modality.load_tasks(cfg)
    started = time.perf_counter()
    model, results = train_centralized(cfg, corpus_shard(cfg, 0, 1), [STEPS])  # one round, constant lr
    return {"method": method, "steps": results[-1].steps, "batch_size": cfg.train.batch_size, "loss": results[-1].loss,
            "seconds_per_step": (time.perf_counter() - started) / results[-1].steps,
            **scores(modality.probe(model.backbone, tasks, cfg, True))}


def baselines(corpus: Path) -> list[dict[str, Any]]:
    import torch

    from fedssl.config import RunConfig
    from fedssl.modality import MODALITIES

    cfg = RunConfig.from_flat({**CONFIG, "video.corpus-dir": str(corpus)})
    modality = MODALITIES.get("video")
    tasks = modality.load_tasks(cfg)
    torch.manual_seed(cfg.seed)
    backbone = modality.build_backbone(cfg)
    rows = [{"method": "raw-pixels", **scores(modality.probe_raw(tasks, cfg, True))},
            {"method": "random-init", **scores(modality.probe(backbone, tasks, cfg, True))}]
    modality.calibrate(backbone, tasks[0].gallery, cfg)
    return rows + [{"method": "random-init-bn", **scores(modality.probe(backbone, tasks, cfg, True))}]


def render(cells: list[dict[str, Any]]) -> str:
    lines = ["| encoder | motion kNN | motion top-1 | motion top-5 | motion linear "
             "| object kNN | object top-1 | object top-5 | object linear |", "|---|" + "---:|" * 8]
    for c in cells:  # a cell measured before top-5 was reported shows nan there
        figures = [c.get(kind, {}).get(task, float("nan")) for task in ("video-motion", "video-object")
                   for kind in ("knn", "top1", "top5", "linear")]
        lines.append(f"| {c['method']} | " + " | ".join(f"{v:.3f}" for v in figures) + " |")
    return "\n".join(lines)


def main() -> int:
    import torch

    torch.set_num_threads(2)
    methods = [m for m in os.environ.get("BENCH_VIDEO_METHODS", "simclr").split(",") if m]  # empty: baselines only
    path = RESULTS / "video.json"
    previous = json.loads(path.read_text())["cells"] if path.is_file() else []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(os.environ.get("BENCH_VIDEO_CORPUS", "") or Path(tmp) / "corpus")
        if not (corpus / "manifest.csv").is_file():
            make_corpus(corpus, CorpusSpec())
        cells = baselines(corpus) + [run(m, corpus) for m in methods]
    names = {c["method"] for c in cells}
    cells = [c for c in previous if c["method"] not in names] + cells
    write_result(path, {"config": CONFIG, "corpus": CorpusSpec().__dict__, "cells": cells})
    print(render(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
