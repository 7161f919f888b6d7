"""Issue 19 item 3: images/s of the small CNN's local training, and our loop vs a plain loop doing the same work.

Section 1 (``bench_client_overhead``) compares ``train_round`` with a plain script that augments
image by image (the 2026-11-21 pipeline); this protocol sits beside it. Four arms train SimCLR on the
same images of one Fashion-MNIST shard, interleaved (the order rotates every repeat), at 1 and 2
torch threads, judged on the process's **CPU time** (wall time on this shared machine swings with
other people's load; it is reported beside it):

* ``commit``: the 2026-11-21 code itself (``BASE_COMMIT``, the commit section 1 was measured at,
  with that day's defaults: per-sample augmentation, its model and heads), extracted with
  ``git archive`` and run in a worker process;
* ``per-sample``: today's ``train_local`` with ``train.augmentation = "per-sample"``;
* ``ours``: today's default through ``train_round`` (batched augmentation of a uint8 tensor,
  channels-last; the threads are the device's, set here by the node config's ``device-cpus``);
* ``plain``: a plain PyTorch loop doing the same work as ``ours`` (the same ``BatchAugment`` with the
  same generator, model, Adam, learning-rate schedule and memory format), so its mean loss must
  equal the one ``ours`` reports (*same batches*).

Goals, at 1 thread (a simulated client gets one of the 2 cores; images per CPU second is per core):
``ours`` loop within 5 % of ``plain`` (CPU); ``ours`` at least 1.5x the images per CPU second of
``commit``. The 2-thread arms are reported beside them: on a loaded machine OpenMP's spinning
threads inflate 2-thread CPU time, so read them with the load average.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from bench.bench_client_overhead import NODE_CONFIG, NODE_ID, ROUND, Clock, ours
from bench.results import goal
from fedssl.augment import BatchAugment, normalization
from fedssl.config import RunConfig
from fedssl.data.node_images import node_images
from fedssl.modality import MODALITIES
from fedssl.ssl import build_ssl_model
from fedssl.state import backbone_arrays, strip_prefix, to_torch
from fedssl.train import RoundPosition, learning_rate, train_local

NAME = "client_speed"
RESULT_KEYS = ("base_commit", "samples", "batch_size", "threads")
BASE_COMMIT = "d15a92d"  # section 1's commit (2026-11-21), before batched augmentation
LOOP_GOAL, SPEED_GOAL = 0.05, 1.5
REPO = Path(__file__).resolve().parents[1]
FULL = {"samples": 1024, "batch_size": 128, "repeats": 5, "threads": (1, 2)}
QUICK = {"samples": 128, "batch_size": 64, "repeats": 1, "threads": (1,)}
ARMS = ("commit", "per-sample", "ours", "plain")

WORKER = """
import json, sys, time
import numpy as np, torch
from fedssl.config import RunConfig
from fedssl.ssl import build_ssl_model
from fedssl.train import train_local
images, samples, batch = np.load(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
cfg = RunConfig.from_flat({"data.max-samples": samples, "train.batch-size": batch})
for line in sys.stdin:
    threads, seed = map(int, line.split())
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_ssl_model(cfg.ssl, cfg.model)
    wall, cpu = time.perf_counter(), time.process_time()
    r = train_local(model, images, cfg.model, cfg.train, seed=seed, max_samples=samples)
    print(json.dumps({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall,
                      "images": r.num_examples, "steps": r.steps, "loss": r.loss}), flush=True)
"""


class CommitWorker:
    """``BASE_COMMIT``'s ``train_local`` in a process of its own (its ``fedssl`` first on the path)."""

    def __init__(self, folder: Path, images: Path, samples: int, batch: int) -> None:
        with subprocess.Popen(["git", "-C", str(REPO), "archive", BASE_COMMIT, "fedssl"],
                              stdout=subprocess.PIPE) as git, tarfile.open(fileobj=git.stdout, mode="r|") as tar:
            tar.extractall(folder, filter="data")
        if git.returncode:
            raise RuntimeError(f"git archive {BASE_COMMIT} failed ({git.returncode})")
        (folder / "worker.py").write_text(WORKER)
        env = {**os.environ, "PYTHONPATH": str(folder), "OMP_NUM_THREADS": "2"}
        self.proc = subprocess.Popen([sys.executable, str(folder / "worker.py"), str(images), str(samples), str(batch)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=folder)

    def __call__(self, threads: int, seed: int) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{threads} {seed}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {BASE_COMMIT} worker exited ({self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _config(size: dict[str, Any], **extra: Any) -> RunConfig:
    return RunConfig.from_flat({"data.partition": "iid", "data.max-samples": size["samples"],
                                "train.batch-size": size["batch_size"], **extra})


def per_sample(size: dict[str, Any], images: np.ndarray, threads: int, seed: int) -> dict[str, float]:
    """Today's ``train_local`` with the image-by-image pipeline."""
    cfg = _config(size, **{"train.augmentation": "per-sample"})
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_ssl_model(cfg.ssl, cfg.model)
    with Clock() as clock:
        r = train_local(model, images, cfg.model, cfg.train, seed=seed, max_samples=cfg.data.max_samples)
    return {"cpu": clock.cpu, "wall": clock.wall, "images": r.num_examples, "steps": r.steps, "loss": r.loss}


def ours_round(cfg: RunConfig, record: ArrayRecord, threads: int) -> dict[str, float]:
    """``train_round`` with the device's threads stated in the node config; the loop's clocks."""
    timed = ours(cfg, record, {**NODE_CONFIG, "device-cpus": threads})
    return {"cpu": timed["loop_cpu"], "wall": timed["loop_wall"], "round_cpu": timed["cpu"],
            "images": timed["examples"], "steps": timed["steps"], "loss": timed["loss"]}


def plain(cfg: RunConfig, global_backbone: dict[str, torch.Tensor], threads: int) -> dict[str, float]:
    """The plain PyTorch loop a user would write for the same round, doing the same batched augmentation."""
    torch.set_num_threads(threads)
    images = node_images(cfg, NODE_CONFIG)
    torch.manual_seed(cfg.seed * 100_003 + ROUND * 1009 + NODE_ID % 1000)  # what train_round seeds
    model = build_ssl_model(cfg.ssl, cfg.model, backbone=MODALITIES.get(cfg.data.modality).build_backbone(cfg))
    model.backbone.load_state_dict(global_backbone)
    seed, batch, fmt = cfg.seed + ROUND, cfg.train.batch_size, torch.channels_last
    with Clock() as clock:
        rng = np.random.default_rng(seed)
        images = images[np.sort(rng.choice(len(images), cfg.data.max_samples, replace=False))]
        data = torch.from_numpy(images)  # (N, C, H, W) uint8
        augment = BatchAugment(*normalization(cfg.model.in_channels), cfg.train.augmentation_params())
        generator = torch.Generator().manual_seed(seed)
        model.to(memory_format=fmt)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr,
                                     weight_decay=cfg.train.weight_decay)
        model.train()
        steps = len(data) // batch
        loss_sum = torch.zeros(())
        order = torch.randperm(len(data), generator=generator)
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg.train, RoundPosition(ROUND, cfg.num_rounds), step, steps)
            chunk = data[order[step * batch:(step + 1) * batch]]
            view_a = augment(chunk, generator).contiguous(memory_format=fmt)
            view_b = augment(chunk, generator).contiguous(memory_format=fmt)
            loss = model(view_a, view_b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.after_step()
            loss_sum += loss.detach()
    return {"cpu": clock.cpu, "wall": clock.wall, "images": steps * batch, "steps": steps,
            "loss": float(loss_sum) / steps}


def measure(size: dict[str, Any], threads: int, commit: CommitWorker | None, shard: np.ndarray,
            cfg: RunConfig, record: ArrayRecord, backbone: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Every arm ``repeats`` times at ``threads``, the order rotating each repeat; medians and ratios."""
    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    for i in range(size["repeats"]):
        for arm in ARMS[i % len(ARMS):] + ARMS[:i % len(ARMS)]:
            if arm == "commit":
                if commit is not None:
                    runs[arm].append(commit(threads, cfg.seed + ROUND))
            elif arm == "per-sample":
                runs[arm].append(per_sample(size, shard, threads, cfg.seed + ROUND))
            elif arm == "ours":
                runs[arm].append(ours_round(cfg, record, threads))
            else:
                runs[arm].append(plain(cfg, backbone, threads))
    med = statistics.median
    arms = {arm: {"images_per_cpu_s": med(r["images"] / r["cpu"] for r in rs),
                  "images_per_wall_s": med(r["images"] / r["wall"] for r in rs),
                  "cpu_s": med(r["cpu"] for r in rs), "wall_s": med(r["wall"] for r in rs),
                  "steps": rs[0]["steps"], "loss": rs[0]["loss"]}
            for arm, rs in runs.items() if rs}
    loop = [o["cpu"] / p["cpu"] for o, p in zip(runs["ours"], runs["plain"])]
    speedup = ([o["images"] / o["cpu"] / (c["images"] / c["cpu"]) for o, c in zip(runs["ours"], runs["commit"])]
               if runs["commit"] else [])
    return {
        "threads": threads, "arms": arms,
        "loop_cpu_ratio": med(loop), "loop_cpu_ratio_range": [min(loop), max(loop)],
        "loop_wall_ratio": med(o["wall"] / p["wall"] for o, p in zip(runs["ours"], runs["plain"])),
        "round_fixed_cpu_s": med(o["round_cpu"] - o["cpu"] for o in runs["ours"]),
        "speedup_vs_commit": med(speedup) if speedup else None,
        "speedup_vs_commit_range": [min(speedup), max(speedup)] if speedup else None,
        "speedup_vs_per_sample": arms["ours"]["images_per_cpu_s"] / arms["per-sample"]["images_per_cpu_s"],
        "same_batches": bool(abs(arms["ours"]["loss"] - arms["plain"]["loss"]) < 1e-4),
    }


def run(quick: bool) -> dict[str, Any]:
    size = QUICK if quick else FULL
    threads_before = torch.get_num_threads()
    cfg = _config(size)
    torch.manual_seed(cfg.seed)
    arrays = backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))
    record = ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()})
    backbone = strip_prefix(to_torch(arrays))
    shard = node_images(cfg, NODE_CONFIG)
    ours(cfg, record, NODE_CONFIG)  # warm-up: loads and partitions Fashion-MNIST once, as a warm ClientApp has
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        np.save(Path(tmp) / "images.npy", shard)
        commit, why = None, ""
        try:
            commit = CommitWorker(Path(tmp) / "base", Path(tmp) / "images.npy", size["samples"], size["batch_size"])
        except (OSError, RuntimeError, tarfile.TarError) as exc:  # no git history here (an installed copy)
            why = f"{BASE_COMMIT} not available: {exc}"
        try:
            started = time.perf_counter()
            by_threads = [measure(size, t, commit, shard, cfg, record, backbone) for t in size["threads"]]
            seconds = time.perf_counter() - started
        finally:
            if commit is not None:
                commit.close()
            torch.set_num_threads(threads_before)
    core = by_threads[0]  # 1 thread: images per CPU second = per core, what load barely distorts
    more = ", ".join(f"{m['threads']} threads: loop {m['loop_cpu_ratio'] - 1:+.1%}, images/CPU s "
                     + ("n/a" if m["speedup_vs_commit"] is None else f"{m['speedup_vs_commit']:.2f}x")
                     for m in by_threads[1:])
    return {
        "reference": f"a plain PyTorch loop doing the same batched augmentation (same batches), and commit "
                     f"{BASE_COMMIT}'s own train_local (2026-11-21, per-sample augmentation), interleaved, CPU time",
        "goals": [
            goal("client loop vs a plain loop doing the same batched augmentation", "<= 5 % slower",
                 core["loop_cpu_ratio"] - 1, core["loop_cpu_ratio"] - 1 <= LOOP_GOAL,
                 f"CPU time of train_local (through train_round) vs the plain loop, 1 thread; same batches: "
                 f"{core['same_batches']}" + (f"; {more} (spinning threads inflate CPU under load)" if more else ""),
                 "percent"),
            goal(f"small-CNN images/s per core vs {BASE_COMMIT} (2026-11-21)", ">= 1.5x",
                 core["speedup_vs_commit"], None if core["speedup_vs_commit"] is None
                 else core["speedup_vs_commit"] >= SPEED_GOAL,
                 why or f"images per CPU second at 1 thread (a simulated client's core), ours / {BASE_COMMIT}'s "
                 f"train_local on the same images: {core['arms']['ours']['images_per_cpu_s']:.0f} vs "
                 f"{core['arms']['commit']['images_per_cpu_s']:.0f}; per-sample augmentation on today's model: "
                 f"{core['speedup_vs_per_sample']:.2f}x", "times"),
        ],
        "results": {"base_commit": BASE_COMMIT, "samples": size["samples"], "batch_size": size["batch_size"],
                    "repeats": size["repeats"], "load_avg_start": load_before, "measure_s": seconds,
                    "commit_unavailable": why or None, "threads": by_threads},
    }
