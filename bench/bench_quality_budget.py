"""Item 6b: encoder quality at the demo's real budget, against every baseline a user compares with.

A new protocol beside ``bench_quality`` (whose small-budget protocol stays as it was). Each cell
(SSL method x data split x seed, optionally with one recipe lever switched off) runs:

* **federated**: the run-config defaults, i.e. exactly what ``scripts/demo.sh`` runs (10 simulated
  clients, 2 sampled per round), through Flower's local simulation (``launcher.simulation``);
* **local-only**: ``fedssl.local_only`` on that run: every client alone, the same rounds and steps;
* **centralized at equal images seen**: one model on the pooled training set for as many optimiser
  steps as all clients made together, with the same recipe and schedule (this process, the core's
  ``train_local``);
* the run's own baselines: raw pixels, the random-init encoder as initialised, and the same
  encoder with BatchNorm statistics calibrated on unlabeled probe images.

Scores: kNN top-1 at k=200 (the selection protocol), kNN at k=20 and a linear probe (5,000
labels) on Fashion-MNIST. The full grid is 4 methods x 3 splits x 3 seeds (about 10 minutes a
cell on 2 cores); ``BENCH_QUALITY_CELLS="simclr:dir0.5:0,simclr:dir0.5:1"`` runs a subset and
``BENCH_QUALITY_LEVERS="default,pool-readout"`` picks levers. Cells already in the result file are
kept, so a grid can be filled over several runs.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.centralized import train_centralized
from bench.results import goal
from fedssl import local_only
from fedssl.config import RunConfig
from fedssl.data.fashion_mnist import load_fashion_mnist
from fedssl.probe import load_probe_tasks, probe_backbone
from launcher.simulation import LocalSimulation

NAME = "quality_budget"
RESULT_KEYS = ("cells", "levers")
TASK = "fashion-mnist"
NODES = 10
METHODS = ("simclr", "byol", "barlowtwins", "moco")
SPLITS = {"iid": {"data.partition": "iid"}, "dir0.5": {"data.partition": "dirichlet", "data.alpha": 0.5},
          "dir0.1": {"data.partition": "dirichlet", "data.alpha": 0.1}}
SEEDS = (0, 1, 2)
LEVERS: dict[str, dict[str, Any]] = {  # each switches one part of the default recipe back to the old one,
    "default": {},                        # or tries a candidate for the next default
    "block2-readout": {"model.readout": "block2", "model.embedding-dim": 3136},
    "whole-model": {"transport-scope": "model"},  # the SSL heads travel: a first-time device starts from them
    "24x25-steps": {"num-rounds": 24, "train.max-steps": 25},  # the same client steps, averaged twice as often
    "block2-24x25": {"model.readout": "block2", "model.embedding-dim": 3136, "num-rounds": 24,
                     "train.max-steps": 25},  # the two levers that moved the federated score, together
    "per-sample-augmentation": {"train.augmentation": "per-sample", "train.crop-min-scale": 0.35,
                                "train.erase-p": 0.25},
    "pool-readout": {"model.readout": "pool", "model.embedding-dim": 128},
    "constant-lr-fresh-optimizer": {"train.schedule": "constant", "train.lr": 0.001,
                                    "train.keep-optimizer-state": False},
}
QUICK_CONFIG = {"num-rounds": 2, "train.max-steps": 2, "train.batch-size": 32, "data.max-samples": 128,
                "eval.gallery-size": 300, "eval.query-size": 100, "eval.linear-labels": 200, "eval.tasks": TASK}
QUICK_NODES = 4


def cells_to_run(quick: bool) -> list[tuple[str, str, int, str]]:
    """``(method, split, seed, lever)`` cells, from ``BENCH_QUALITY_CELLS``/``_LEVERS`` or the full grid.

    Raises:
        ValueError: for a malformed cell or an unknown method, split or lever.
    """
    if quick:
        return [("simclr", "dir0.5", 0, "default")]
    spec = os.environ.get("BENCH_QUALITY_CELLS", "")
    grid = [(m, s, seed) for m in METHODS for s in SPLITS for seed in SEEDS]
    cells = [tuple(c.split(":")) for c in spec.split(",") if c.strip()] if spec else grid
    levers = [lv.strip() for lv in os.environ.get("BENCH_QUALITY_LEVERS", "default").split(",") if lv.strip()]
    out = []
    for cell in cells:
        if len(cell) != 3 or cell[0] not in METHODS or cell[1] not in SPLITS:
            raise ValueError(f"BENCH_QUALITY_CELLS: {':'.join(cell)!r} is not method:split:seed with method in "
                             f"{list(METHODS)} and split in {list(SPLITS)}")
        for lever in levers:
            if lever not in LEVERS:
                raise ValueError(f"BENCH_QUALITY_LEVERS: {lever!r} is not one of {list(LEVERS)}")
            out.append((cell[0], cell[1], int(cell[2]), lever))
    return out


def cell_config(method: str, split: str, seed: int, lever: str, quick: bool) -> dict[str, Any]:
    return {"ssl.method": method, "seed": seed, **SPLITS[split], **LEVERS[lever], **(QUICK_CONFIG if quick else {})}


def centralized(flat: dict[str, Any], steps_per_round: list[int]) -> dict[str, dict[str, float]]:
    """One model on the pooled data, as many steps per round as all clients of that round together."""
    cfg = RunConfig.from_flat(flat)
    images, _ = load_fashion_mnist("train")
    model, _ = train_centralized(cfg, images, steps_per_round, sample_each_round=True)
    tasks = load_probe_tasks(cfg.eval, cfg.model.image_size, seed=cfg.seed)
    return probe_backbone(model.backbone, tasks, cfg.model, cfg.eval).as_dict()


def run_cell(sim: LocalSimulation, method: str, split: str, seed: int, lever: str, quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    flat = cell_config(method, split, seed, lever, quick)
    run_dir = sim.run(flat, nodes=QUICK_NODES if quick else NODES, timeout=3600)
    fed_s = time.perf_counter() - started
    local = local_only.run(run_dir, workers=2)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    steps = [int(sum(c.get("steps", 0) for c in r["clients"])) for r in metrics["rounds"]]
    central = centralized({**metrics["config"]}, steps)
    last = metrics["rounds"][-1]
    federated = {"knn": last["knn"], "knn_report": last["knn_report"], "linear": last.get("linear", {})}
    scores = {"federated": federated, "local-only": {k: v for k, v in local.items()},
              "centralized": central,
              **{name: metrics["baseline_probes"][name] for name in ("raw-pixels", "random-init", "random-init-bn")}}
    return {"method": method, "split": split, "seed": seed, "lever": lever, "rounds": len(metrics["rounds"]),
            "client_steps": sum(steps), "sequential_steps": int(max(r.get("steps", 0) for r in last["clients"])
                                                                  * len(metrics["rounds"])),
            "knn_per_round": [r["knn"][TASK] for r in metrics["rounds"]],
            "scores": {name: {probe: s[probe][TASK] for probe in ("knn", "knn_report", "linear") if TASK in s[probe]}
                       for name, s in scores.items()},
            "federated_s": fed_s, "wall_s": time.perf_counter() - started}


def run(quick: bool) -> dict[str, Any]:
    previous = _previous_cells(quick)
    cells = []
    with tempfile.TemporaryDirectory(prefix="bench-quality-budget-") as tmp, LocalSimulation(Path(tmp)) as sim:
        for method, split, seed, lever in cells_to_run(quick):
            print(f"[bench] quality_budget: {method} {split} seed {seed} lever {lever}", flush=True)
            cells.append(run_cell(sim, method, split, seed, lever, quick))
    done = {_key(c) for c in cells}
    cells = [c for c in previous if _key(c) not in done] + cells
    return {"reference": "raw pixels, random-init (as initialised and BatchNorm-calibrated), local-only and "
                         "centralized SSL at equal images seen, all measured in the same cell",
            "goals": _goals(cells), "results": {"cells": cells, "levers": LEVERS}}


def _key(cell: dict[str, Any]) -> tuple:
    return cell["method"], cell["split"], cell["seed"], cell["lever"]


def _previous_cells(quick: bool) -> list[dict[str, Any]]:
    path = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
    if quick or not path.is_file():
        return []
    return json.loads(path.read_text())["results"]["cells"]


def _goals(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    demo = [c for c in cells if c["method"] == "simclr" and c["split"] == "dir0.5" and c["lever"] == "default"]
    if not demo:
        return []
    goals = []
    for name, margin in (("raw-pixels", 0.01), ("random-init", 0.01), ("local-only", 0.03)):
        gaps = [c["scores"]["federated"]["knn"] - c["scores"][name]["knn"] for c in demo]
        goals.append(goal(f"demo encoder beats {name} (kNN k=200), worst seed", f">= {margin * 100:.0f} points in "
                          "every seed", float(min(gaps)), bool(min(gaps) >= margin),
                          f"{len(demo)} seed(s): " + ", ".join(f"{g * 100:+.1f}" for g in gaps), "points"))
    return goals


def margins(cells: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Per (method, split, lever): seeds, mean federated kNN, and mean (range) of the margins in points."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["method"], c["split"], c["lever"]), []).append(c)

    def gap(cs: list[dict[str, Any]], a: str, b: str) -> str:
        values = [100 * (c["scores"][a]["knn"] - c["scores"][b]["knn"]) for c in cs]
        return f"{np.mean(values):+.1f} ({min(values):+.1f} to {max(values):+.1f})"

    return [(" ".join(key), str(len(cs)), f"{np.mean([c['scores']['federated']['knn'] for c in cs]):.4f}",
             gap(cs, "federated", "local-only"), gap(cs, "federated", "raw-pixels"),
             gap(cs, "federated", "random-init"), gap(cs, "centralized", "local-only"))
            for key, cs in groups.items()]
