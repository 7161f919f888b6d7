"""Item 5 inside the suite: runs ``bench/bench_export.py`` (issue #4's benchmark, another engineer's).

That script needs an encoder checkpoint and writes its own ``export.json`` (the one its author
committed in ``bench/results/`` stays theirs). Here it runs into a temporary folder on a freshly
trained encoder (a short SimCLR run of the core's ``train_local`` on Fashion-MNIST, saved as the
server saves encoders), at small sizes in quick mode, and its figures are wrapped in the suite's
envelope (goals, reference) as ``export_suite.json``. Its code is called, never copied.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.machine import REPO
from bench.results import goal
from fedssl.checkpoint import save_encoder
from fedssl.config import RunConfig
from fedssl.data.fashion_mnist import load_fashion_mnist
from fedssl.ssl import build_ssl_model
from fedssl.state import strip_prefix
from fedssl.train import train_local

NAME = "export_suite"
MODULE = "bench.bench_export"
RESULT_KEYS = ("accuracy", "latency", "file_mb", "checkpoint")
FULL = {"train_images": 4096, "args": []}
QUICK = {"train_images": 256, "args": ["--gallery", "500", "--queries", "200", "--rounds", "2",
                                        "--query-galleries", "1000", "--threads", "1"]}


def make_checkpoint(path: Path, images: int) -> dict[str, Any]:
    """A SimCLR-trained small CNN (``images`` images seen), saved with the server's encoder metadata."""
    cfg = RunConfig.from_flat({"data.max-samples": images})
    torch.manual_seed(cfg.seed)
    model = build_ssl_model(cfg.ssl, cfg.model)
    train_images, _ = load_fashion_mnist("train")
    result = train_local(model, train_images, cfg.model, cfg.train, seed=cfg.seed, max_samples=images)
    save_encoder(path, strip_prefix(model.state_dict()), cfg.model, run_id="bench-export", ssl_method=cfg.ssl.method,
                 round=1)
    return {"encoder": cfg.model.encoder, "ssl": cfg.ssl.method, "images_seen": result.num_examples,
            "loss": result.loss}


def run(quick: bool) -> dict[str, Any]:
    size = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        checkpoint = Path(tmp) / "encoder.pt"
        trained = make_checkpoint(checkpoint, size["train_images"])
        out = Path(tmp) / "out"
        subprocess.run([sys.executable, "-m", MODULE, "--checkpoint", str(checkpoint), "--results-dir", str(out),
                        *size["args"]], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        theirs = json.loads((out / "export.json").read_text())
    r = theirs["results"]
    lat, acc = r["latency"]["1"], r["accuracy"]
    fp32_speedup = lat["torch"]["batch1"]["median_ms"] / lat["fp32"]["batch1"]["median_ms"]
    int8_speedup = lat["fp32"]["batch1"]["median_ms"] / lat["int8"]["batch1"]["median_ms"]
    int8_drop = acc["int8"]["knn"] - acc["torch"]["knn"]
    return {
        "reference": "PyTorch eager on the same encoder and images, interleaved in the same run",
        "goals": [
            goal("ORT fp32 vs PyTorch eager, batch 1, 1 thread", "faster (no numeric goal in the issue)",
                 fp32_speedup, None, "latency ratio torch / ORT fp32", "times"),
            goal("ORT int8 vs ORT fp32, batch 1, 1 thread", "faster (no numeric goal in the issue)", int8_speedup,
                 None, "latency ratio ORT fp32 / ORT int8", "times"),
            goal("int8 kNN top-1 change vs PyTorch", "small (no numeric goal in the issue)", int8_drop, None,
                 "weighted kNN top-1, int8 minus torch", "points"),
        ],
        "results": {**r, "checkpoint": trained, "export_machine": theirs["machine"], "command": theirs["command"],
                    "export_seconds": theirs["seconds"], "export_load_avg_end": theirs["load_avg_end"]},
    }
