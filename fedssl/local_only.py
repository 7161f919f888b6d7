"""The local-only baseline: every simulated client trains alone, as it would without a federation.

It answers the question a user asks first ("why federate?"). Each client starts from the
same initial encoder as the federation, trains on its own shard for exactly the rounds and
local steps it trained in the federation (read from the run's ``metrics.json``), with the same
recipe and learning-rate schedule, and never sees another client's weights. Its encoders are
scored with the same probes; the baseline is the mean over clients. Only a simulation can
measure it (the server never holds a device's data), so it runs after the federation, in the
same command (``scripts/demo.sh``).

Usage: ``python -m fedssl.local_only outputs/<run-id> [--workers 2]``, or ``outputs --since <epoch>``
for the latest run written since then.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedssl.atomic import atomic_write_json
from fedssl.config import RunConfig
from fedssl.modality import MODALITIES
from fedssl.plot import plot_knn
from fedssl.ssl import build_ssl_model
from fedssl.ssl.base import SSLModel
from fedssl.summary import latest_run
from fedssl.train import LocalResult, RoundPosition, train_local

BASELINE = "local-only"


def participation(metrics: dict[str, Any]) -> dict[int, list[tuple[int, int]]]:
    """``{partition_id: [(round, local steps), ...]}`` of every client that trained in the run.

    Raises:
        ValueError: if the run has no simulated partitions (devices with their own data).
    """
    rounds: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for entry in metrics["rounds"]:
        for client in entry.get("clients", []):
            pid, steps = int(client.get("partition-id", -1)), int(client.get("steps", 0))
            if pid >= 0 and steps > 0:
                rounds[pid].append((int(entry["round"]), steps))
    if not rounds:
        raise ValueError("no client of this run trained on a simulated partition: local-only needs a simulation")
    return dict(rounds)


def num_partitions_of(metrics: dict[str, Any]) -> int:
    """How many shards the simulated data was split into, as the clients reported it."""
    counts = {int(c.get("num-partitions", 0)) for r in metrics["rounds"] for c in r.get("clients", [])}
    counts.discard(0)
    if len(counts) != 1:
        raise ValueError(f"clients reported num-partitions {sorted(counts)}; pass --num-partitions")
    return counts.pop()


def train_rounds(cfg: RunConfig, data: Any, rounds: list[tuple[int, int]],
                 samples_per_round: Callable[[int], int] | None = None,
                 after_round: Callable[[int, SSLModel], None] | None = None) -> tuple[SSLModel, list[LocalResult]]:
    """The federation's initial model trained alone for ``rounds`` ``[(round, steps), ...]``, and each round's result.

    Each round runs as a device runs it: the federation's learning-rate schedule at that round of
    ``cfg.num_rounds``, the optimiser state kept between rounds when devices keep theirs.
    ``samples_per_round(steps)`` caps the samples a round visits (default: ``data.max-samples``);
    ``after_round(round, model)`` runs after each round (learning curves).
    """
    modality = MODALITIES.get(cfg.data.modality)
    torch.manual_seed(cfg.seed)  # the federation's initial encoder (server_app.app seeds the same way)
    model = build_ssl_model(cfg.ssl, cfg.model, backbone=modality.build_backbone(cfg))
    optimizer_state, results = None, []
    for server_round, steps in rounds:
        train_cfg = replace(cfg.train, max_steps=steps)
        result = train_local(model, data, cfg.model, train_cfg, seed=cfg.seed + server_round,
                             max_samples=cfg.data.max_samples if samples_per_round is None
                             else samples_per_round(steps),
                             position=RoundPosition(server_round, cfg.num_rounds),
                             optimizer_state=optimizer_state if cfg.train.keep_optimizer_state else None,
                             views=modality.views(cfg))
        optimizer_state = result.optimizer_state
        results.append(result)
        if after_round is not None:
            after_round(server_round, model)
    return model, results


def train_alone(cfg: RunConfig, shard: np.ndarray, rounds: list[tuple[int, int]]) -> torch.nn.Module:
    """One client's encoder after training alone for ``rounds`` ``[(round, steps), ...]``."""
    return train_rounds(cfg, shard, rounds)[0].backbone


def _client_scores(args: tuple[dict[str, Any], int, int, list[tuple[int, int]]]) -> tuple[int, dict[str, Any]]:
    flat, pid, num_partitions, rounds = args
    torch.set_num_threads(1)  # one client per core
    cfg = RunConfig.from_flat(flat)
    modality = MODALITIES.get(cfg.data.modality)  # the client's own shard, as the simulated device read it
    shard = modality.node_data(cfg, {"partition-id": pid, "num-partitions": num_partitions})
    backbone = train_alone(cfg, shard, rounds)
    return pid, modality.probe(backbone, modality.load_tasks(cfg), cfg, True).as_dict()


def mean_scores(per_client: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean over clients of every probe and task."""
    return {probe: {task: float(np.mean([c[probe][task] for c in per_client])) for task in per_client[0][probe]}
            for probe in per_client[0]}


def run(run_dir: Path, workers: int = 2, num_partitions: int | None = None) -> dict[str, Any]:
    """Measure the baseline for the run in ``run_dir`` and write it into its ``metrics.json`` and plot."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    rounds = participation(metrics)
    n = num_partitions or num_partitions_of(metrics)
    jobs = [(metrics["config"], pid, n, r) for pid, r in sorted(rounds.items())]
    started = time.perf_counter()
    print(f"[fedssl] local-only baseline: {len(jobs)} clients train alone "
          f"({sum(s for r in rounds.values() for _, s in r)} steps in all) on {workers} worker(s)", flush=True)
    per_client: dict[int, dict[str, Any]] = {}
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for pid, scores in pool.imap_unordered(_client_scores, jobs):
            per_client[pid] = scores
            print(f"[fedssl] local-only client {pid} ({len(per_client)}/{len(jobs)}): kNN "
                  + "  ".join(f"{t}={s:.4f}" for t, s in scores["knn"].items())
                  + f"  {time.perf_counter() - started:.0f}s", flush=True)
    scores = mean_scores([per_client[pid] for pid in sorted(per_client)])
    metrics["baselines"][BASELINE] = scores["knn"]
    metrics.setdefault("baseline_probes", {})[BASELINE] = {
        **scores, "clients": {str(pid): per_client[pid] for pid in sorted(per_client)},
        "seconds": time.perf_counter() - started}
    atomic_write_json(path, metrics)
    plot_knn(metrics, run_dir / "knn.png")
    print("[fedssl] baseline local-only kNN " + "  ".join(f"{t}={s:.4f}" for t, s in scores["knn"].items())
          + f"  (mean of {len(per_client)} clients, {time.perf_counter() - started:.0f}s)", flush=True)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="outputs/<run-id> of a finished simulated run, or with "
                        "--since the outputs folder holding it")
    parser.add_argument("--since", type=float, default=None, help="take the latest run in RUN_DIR written since")
    parser.add_argument("--workers", type=int, default=2, help="clients trained at once (one core each)")
    parser.add_argument("--num-partitions", type=int, default=None,
                        help="how many partitions the run's data was split into (default: from metrics.json)")
    args = parser.parse_args(argv)
    run_dir = args.run_dir if args.since is None else latest_run(args.run_dir, args.since)
    if run_dir is None:
        print(f"local-only baseline: no run in {args.run_dir} since {args.since}", file=sys.stderr)
        return 1
    try:
        run(run_dir, args.workers, args.num_partitions)
    except (FileNotFoundError, ValueError) as exc:
        print(f"local-only baseline: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
