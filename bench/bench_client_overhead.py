"""Item 1: our ClientApp's local training vs a plain PyTorch loop with the same model, loss and batches.

Both arms see the *same* batches: the reference replays the ClientApp's seeding (torch seed, model
construction, sample choice, loader generator), so its mean loss must equal the one our reply
reports. Arms are interleaved (ours, reference, reference, ours, ...), one torch thread each.

The machine is shared, so wall time swings with other people's load; the goal is judged on the
process's **CPU time** (``time.process_time``), which counts the work done, not the waiting. Wall
ratios are reported beside it. Two levels:

* round (the goal, <= 5 %): ``train_round`` end to end (config parsing, model build, backbone load,
  ``train_local``, the collapse check, NumPy/ArrayRecord conversion) vs the reference script (model
  build, backbone load, loader, optimiser, loop);
* loop: ``train_local`` alone (loader, optimiser, loop; timed through ``train_round``'s ``timer``
  hook) vs the reference's loader, optimiser and loop.

``train_round``'s fixed cost per round (everything but ``train_local``: mostly the collapse check)
is also projected onto the demo's round size (``data.max-samples`` 4000, batch 128 = 31 steps).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, RecordDict
from torch.utils.data import DataLoader

from bench.results import goal
from client_app.app import train_round
from client_app.data import node_images
from fedssl import reply
from fedssl.augment import TwoViewDataset, normalization, ssl_augmentation
from fedssl.config import RunConfig
from fedssl.ssl import build_ssl_model
from fedssl.state import backbone_arrays, strip_prefix, to_torch

NAME = "client_overhead"
RESULT_KEYS = ("threads", "samples", "batch_size", "methods")
GOAL = 0.05
DEMO_STEPS = 4000 // 128  # the demo's default round: data.max-samples 4000, train.batch-size 128
NODE_ID, ROUND = 7, 1
NODE_CONFIG = {"partition-id": 0, "num-partitions": 10}
ONE_CPU = {**NODE_CONFIG, "device-cpus": 1}  # train_round sets the device's threads; this protocol runs 1
FULL = {"methods": ("simclr", "byol", "barlowtwins"), "samples": 1024, "batch_size": 128, "repeats": 4}
QUICK = {"methods": ("simclr",), "samples": 128, "batch_size": 64, "repeats": 2}
# This protocol's reference augments image by image with the default AugmentationParams and a constant
# learning rate, as the ClientApp did on 2026-11-21; later defaults (batched augmentation, other crop and
# erase ranges, the cosine schedule, channels-last) are pinned back so both arms keep seeing the same
# batches. bench_client_speed.py measures today's defaults against a plain loop doing the same work.
PROTOCOL_2026_11_21 = {"train.augmentation": "per-sample", "train.crop-min-scale": 0.35, "train.erase-p": 0.25,
                       "train.schedule": "constant", "train.channels-last": False}


class Clock:
    """Wall and CPU seconds of a block: ``with clock: ...`` then ``clock.wall``, ``clock.cpu``."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


class PhaseClocks:
    """A ``PhaseTimer`` for ``train_round``: a fresh :class:`Clock` per phase (``train_local``, ``collapse_check``)."""

    def __init__(self) -> None:
        self.clocks: dict[str, Clock] = {}

    def __call__(self, name: str) -> Clock:
        self.clocks[name] = Clock()
        return self.clocks[name]


def _seed(cfg: RunConfig) -> int:
    return cfg.seed * 100_003 + ROUND * 1009 + NODE_ID % 1000  # exactly what train_round seeds


def ours(cfg: RunConfig, record: ArrayRecord, node_config: dict[str, Any] | None = None) -> dict[str, float]:
    """One ClientApp round (no Flower messaging): its clocks, the reply's loss, steps and examples."""
    context = Context(run_id=1, node_id=NODE_ID, node_config=node_config or NODE_CONFIG, state=RecordDict(),
                      run_config=cfg.to_flat())
    phases = PhaseClocks()
    with Clock() as total:
        content = train_round(record, ROUND, context, timer=phases)
    inner = phases.clocks
    metrics = content[reply.METRICS]
    return {"wall": total.wall, "cpu": total.cpu, "loop_wall": inner["train_local"].wall,
            "loop_cpu": inner["train_local"].cpu, "collapse_cpu": inner["collapse_check"].cpu,
            "loss": float(metrics[reply.LOSS]), "steps": float(metrics[reply.STEPS]),
            "examples": float(metrics[reply.NUM_EXAMPLES])}


def _batches(cfg: RunConfig, images: np.ndarray) -> DataLoader:
    rng = np.random.default_rng(cfg.seed + ROUND)
    if cfg.data.max_samples and len(images) > cfg.data.max_samples:
        images = images[np.sort(rng.choice(len(images), cfg.data.max_samples, replace=False))]
    mean, std = normalization(cfg.model.in_channels)
    dataset = TwoViewDataset(images, ssl_augmentation(cfg.model.image_size, cfg.model.in_channels, mean, std))
    return DataLoader(dataset, batch_size=min(cfg.train.batch_size, len(images)), shuffle=True, drop_last=True,
                      generator=torch.Generator().manual_seed(cfg.seed + ROUND))


def reference(cfg: RunConfig, global_backbone: dict[str, torch.Tensor]) -> dict[str, float]:
    """The plain PyTorch script a user would write for the same round."""
    images = node_images(cfg, NODE_CONFIG)  # cached after the warm-up, as in a warm ClientApp
    with Clock() as total:
        torch.manual_seed(_seed(cfg))
        model = build_ssl_model(cfg.ssl, cfg.model)
        model.backbone.load_state_dict(global_backbone)
        with Clock() as loop:
            loader = _batches(cfg, images)
            optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr,
                                         weight_decay=cfg.train.weight_decay)
            model.train()
            loss_sum, steps = torch.zeros(()), 0
            for view_a, view_b in loader:
                loss = model(view_a, view_b)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                model.after_step()
                loss_sum += loss.detach()
                steps += 1
    return {"wall": total.wall, "cpu": total.cpu, "loop_wall": loop.wall, "loop_cpu": loop.cpu,
            "loss": float(loss_sum) / steps, "steps": float(steps)}


def augmentation_only(cfg: RunConfig) -> float:
    """CPU seconds to produce the same two-view batches without any model."""
    images = node_images(cfg, NODE_CONFIG)
    torch.manual_seed(_seed(cfg))
    with Clock() as clock:
        for _ in _batches(cfg, images):
            pass
    return clock.cpu


def measure_method(method: str, size: dict[str, Any]) -> dict[str, Any]:
    cfg = RunConfig.from_flat({"ssl.method": method, "data.partition": "iid", "data.max-samples": size["samples"],
                               "train.batch-size": size["batch_size"], **PROTOCOL_2026_11_21})
    torch.manual_seed(cfg.seed)
    arrays = backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))
    record = ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()})
    global_backbone = strip_prefix(to_torch(arrays))
    ours(cfg, record, ONE_CPU)  # warm-up: loads and partitions Fashion-MNIST once, as a warm ClientApp has
    pairs = []
    for i in range(size["repeats"]):
        order = ("ours", "reference") if i % 2 == 0 else ("reference", "ours")
        timed = {arm: ours(cfg, record, ONE_CPU) if arm == "ours" else reference(cfg, global_backbone) for arm in order}
        timed["augmentation_cpu"] = augmentation_only(cfg)
        pairs.append(timed)
    med = statistics.median

    def ratios(key: str) -> list[float]:
        return [p["ours"][key] / p["reference"][key] for p in pairs]

    ref_cpu, ours_cpu = med(p["reference"]["cpu"] for p in pairs), med(p["ours"]["cpu"] for p in pairs)
    fixed_cpu = med(p["ours"]["cpu"] - p["ours"]["loop_cpu"] for p in pairs)  # per round, outside train_local
    ref_step_cpu = med(p["reference"]["loop_cpu"] for p in pairs) / pairs[0]["reference"]["steps"]
    return {
        "method": method,
        "steps": pairs[0]["ours"]["steps"],
        "ours_cpu_s": ours_cpu, "reference_cpu_s": ref_cpu,
        "ours_wall_s": med(p["ours"]["wall"] for p in pairs),
        "reference_wall_s": med(p["reference"]["wall"] for p in pairs),
        "round_cpu_ratio": med(ratios("cpu")), "round_cpu_ratio_range": [min(ratios("cpu")), max(ratios("cpu"))],
        "loop_cpu_ratio": med(ratios("loop_cpu")),
        "loop_cpu_ratio_range": [min(ratios("loop_cpu")), max(ratios("loop_cpu"))],
        "round_wall_ratio": med(ratios("wall")), "round_wall_ratio_range": [min(ratios("wall")), max(ratios("wall"))],
        "fixed_cpu_s": fixed_cpu,
        "collapse_check_cpu_s": med(p["ours"]["collapse_cpu"] for p in pairs),
        "projected_demo_round_overhead": (ours_cpu - ref_cpu) / (ref_step_cpu * DEMO_STEPS),
        "reference_step_cpu_s": ref_step_cpu,
        "augmentation_share": med(p["augmentation_cpu"] / p["reference"]["loop_cpu"] for p in pairs),
        "images_per_cpu_s_reference": cfg.train.batch_size / ref_step_cpu,
        "loss_ours": pairs[0]["ours"]["loss"], "loss_reference": pairs[0]["reference"]["loss"],
        "same_batches": bool(abs(pairs[0]["ours"]["loss"] - pairs[0]["reference"]["loss"]) < 1e-4),
    }


def run(quick: bool) -> dict[str, Any]:
    size = QUICK if quick else FULL
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a simulated client gets one CPU
    try:
        methods = [measure_method(m, size) for m in size["methods"]]
    finally:
        torch.set_num_threads(threads)
    worst_round = max(methods, key=lambda m: m["round_cpu_ratio"])
    worst_loop = max(methods, key=lambda m: m["loop_cpu_ratio"])
    worst_demo = max(m["projected_demo_round_overhead"] for m in methods)
    steps = int(methods[0]["steps"])
    return {
        "reference": "a plain PyTorch loop (same SSLModel, Adam, DataLoader and seeds, so the same batches), "
                     "interleaved, CPU time",
        "goals": [
            goal(f"client round overhead ({steps}-step round)", "<= 5 % slower", worst_round["round_cpu_ratio"] - 1,
                 worst_round["round_cpu_ratio"] - 1 <= GOAL,
                 f"CPU time of train_round vs the plain script, worst method ({worst_round['method']}); projected "
                 f"at the demo's {DEMO_STEPS}-step round: {worst_demo:+.1%}", "percent"),
            goal("client loop overhead", "<= 5 % slower", worst_loop["loop_cpu_ratio"] - 1,
                 worst_loop["loop_cpu_ratio"] - 1 <= GOAL,
                 f"CPU time of train_local vs the plain loop, worst method ({worst_loop['method']})", "percent"),
        ],
        "results": {"threads": 1, "samples": size["samples"], "batch_size": size["batch_size"],
                    "repeats": size["repeats"], "demo_steps": DEMO_STEPS, "methods": methods},
    }
