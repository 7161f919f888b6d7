"""Headroom of the image recipe: how far one model on the pooled data gets, and how early (issue 12).

The demo's local-only margin can be no larger than what a federation could gain if federating cost
nothing: centralized SSL at the federation's number of steps against one client's shard at a
client's number of steps. This benchmark measures both for recipe variants (one change to the run
config each), with the product's training (``bench.centralized``: the federation's schedule over
``rounds`` rounds) and probe (kNN k=200 as devices retrieve, k=20, centred kNN, linear probe), on
Fashion-MNIST.

    python -m bench.bench_recipe_curve                         # every variant, pooled data, 6 x 100 steps
    BENCH_CURVE_VARIANTS=default,moco BENCH_CURVE_SHARD=0 BENCH_CURVE_STEPS=40 BENCH_CURVE_ROUNDS=3 \\
        python -m bench.bench_recipe_curve                     # client 0's shard at a client's budget
    python -m bench.bench_recipe_curve --quick                 # 2 x 2 steps: proves the script runs

Writes ``bench/results/recipe_curve.json`` (``results/quick/`` with ``--quick``); cells already there
with another key (variant, data, rounds, steps, seed) are kept. One seed per call (``BENCH_CURVE_SEED``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.centralized import train_centralized
from bench.machine import describe
from bench.results import write_result
from fedssl.config import RunConfig
from fedssl.data.fashion_mnist import load_fashion_mnist
from fedssl.modality import MODALITIES
from fedssl.probe import load_probe_tasks, probe_backbone
from fedssl.ssl.base import SSLModel

TASK = "fashion-mnist"
VARIANTS: dict[str, dict[str, Any]] = {  # each changes one thing of the run-config defaults
    "default": {},
    "lr-5e-3": {"train.lr": 0.005},
    "temperature-0.1": {"ssl.temperature": 0.1},
    "temperature-0.5": {"ssl.temperature": 0.5},
    "batch-256": {"train.batch-size": 256},
    "crop-0.3": {"train.crop-min-scale": 0.3},
    "byol": {"ssl.method": "byol"},
    "moco": {"ssl.method": "moco"},
    "barlowtwins": {"ssl.method": "barlowtwins"},
    "block2-readout": {"model.readout": "block2", "model.embedding-dim": 3136},
}
QUICK = {"train.batch-size": 16, "eval.gallery-size": 200, "eval.query-size": 100, "eval.linear-labels": 100}


def curve(variant: str, shard: str, rounds: int, steps: int, seed: int, quick: bool) -> dict[str, Any]:
    """Probe scores after each round of one variant trained on ``shard`` ("pooled" or a client's partition id)."""
    cfg = RunConfig.from_flat({**VARIANTS[variant], "seed": seed, "eval.tasks": TASK, **(QUICK if quick else {})})
    if shard == "pooled":
        data, _ = load_fashion_mnist("train")
    else:
        data = MODALITIES.get("image").node_data(cfg, {"partition-id": int(shard), "num-partitions": 10})
    tasks = load_probe_tasks(cfg.eval, cfg.model.image_size, seed=seed)
    points: list[dict[str, Any]] = []
    started = time.perf_counter()

    def probe(server_round: int, model: SSLModel) -> None:
        scores = probe_backbone(model.backbone, tasks, cfg.model, cfg.eval).as_dict()
        points.append({"round": server_round, "steps": server_round * steps,
                       **{name: scores[name][TASK] for name in ("knn", "knn_report", "knn_centred", "linear")}})
        print(f"[bench] recipe_curve {variant} {shard} round {server_round}: kNN {points[-1]['knn']:.4f} "
              f"{time.perf_counter() - started:.0f}s", flush=True)

    train_centralized(cfg, data, [steps] * rounds, sample_each_round=True,
                      after_round=probe)
    return {"variant": variant, "overrides": VARIANTS[variant], "data": shard, "rounds": rounds, "steps": steps,
            "seed": seed, "points": points, "seconds": round(time.perf_counter() - started, 1)}


def main() -> int:
    quick = "--quick" in sys.argv
    torch.set_num_threads(int(os.environ.get("BENCH_CURVE_THREADS", "2")))
    rounds = 2 if quick else int(os.environ.get("BENCH_CURVE_ROUNDS", "6"))
    steps = 2 if quick else int(os.environ.get("BENCH_CURVE_STEPS", "100"))
    shard = os.environ.get("BENCH_CURVE_SHARD", "pooled")
    seed = int(os.environ.get("BENCH_CURVE_SEED", "0"))
    names = ["default"] if quick else [v for v in os.environ.get("BENCH_CURVE_VARIANTS", ",".join(VARIANTS)).split(",")
                                       if v]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"BENCH_CURVE_VARIANTS: unknown {unknown}; known: {list(VARIANTS)}")
    path = Path(__file__).resolve().parent / "results" / ("quick" if quick else "") / "recipe_curve.json"
    previous = json.loads(path.read_text())["cells"] if path.is_file() and not quick else []
    cells = [curve(name, shard, rounds, steps, seed, quick) for name in names]
    key = lambda c: (c["variant"], c["data"], c["rounds"], c["steps"], c["seed"])  # noqa: E731
    done = {key(c) for c in cells}
    write_result(path, {"benchmark": "recipe_curve", "machine": describe(),
                        "cells": [c for c in previous if key(c) not in done] + cells})
    print(f"[bench] recipe_curve: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
