"""Item 1: our ClientApp's local training vs a plain PyTorch loop with the same model, loss and batches.

Both arms see the *same* batches: the reference replays the ClientApp's seeding (torch seed, model
construction, sample choice, loader generator), so its mean loss must equal the one our reply
reports. Arms are interleaved (ours, reference, reference, ours, ...) and the median of the per-pair
ratios is reported, because the machine is shared. Two ratios:

* loop: the time ``train_local`` spends in its loop vs the reference loop (per-step machinery:
  finiteness check, ``loss.item()``, ``after_step``);
* round (the goal, <= 5 %): ``train_round`` end to end (config parsing, model build, backbone load,
  the loop, the collapse check, NumPy/ArrayRecord conversion) vs the reference script (model build,
  backbone load, loader, optimiser, loop).

The augmentation-only time of the same batches and the collapse check alone are reported too, to
show where the time goes.
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
from fedssl.train import collapse_check

NAME = "client_overhead"
RESULT_KEYS = ("threads", "samples", "batch_size", "methods")
GOAL = 0.05
NODE_ID, ROUND = 7, 1
NODE_CONFIG = {"partition-id": 0, "num-partitions": 10}
FULL = {"methods": ("simclr", "byol", "barlowtwins"), "samples": 1024, "batch_size": 128, "repeats": 4}
QUICK = {"methods": ("simclr",), "samples": 128, "batch_size": 64, "repeats": 2}


def _seed(cfg: RunConfig) -> int:
    return cfg.seed * 100_003 + ROUND * 1009 + NODE_ID % 1000  # exactly what train_round seeds


def ours(cfg: RunConfig, record: ArrayRecord) -> dict[str, float]:
    """One ClientApp round (no Flower messaging); its wall time and the reply's loop time and loss."""
    context = Context(run_id=1, node_id=NODE_ID, node_config=NODE_CONFIG, state=RecordDict(),
                      run_config=cfg.to_flat())
    started = time.perf_counter()
    content = train_round(record, ROUND, context)
    total = time.perf_counter() - started
    metrics = content[reply.METRICS]
    return {"total": total, "loop": float(metrics[reply.SECONDS]), "loss": float(metrics[reply.LOSS]),
            "steps": float(metrics[reply.STEPS])}


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
    started = time.perf_counter()
    torch.manual_seed(_seed(cfg))
    model = build_ssl_model(cfg.ssl, cfg.model)
    model.backbone.load_state_dict(global_backbone)
    loader = _batches(cfg, images)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr,
                                 weight_decay=cfg.train.weight_decay)
    model.train()
    loop_started, loss_sum, steps = time.perf_counter(), torch.zeros(()), 0
    for view_a, view_b in loader:
        loss = model(view_a, view_b)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.after_step()
        loss_sum += loss.detach()
        steps += 1
    ended = time.perf_counter()
    return {"total": ended - started, "loop": ended - loop_started, "loss": float(loss_sum) / steps,
            "steps": float(steps)}


def augmentation_only(cfg: RunConfig) -> float:
    """Seconds to produce the same two-view batches without any model."""
    images = node_images(cfg, NODE_CONFIG)
    torch.manual_seed(_seed(cfg))
    started = time.perf_counter()
    for _ in _batches(cfg, images):
        pass
    return time.perf_counter() - started


def collapse_only(cfg: RunConfig, global_backbone: dict[str, torch.Tensor]) -> float:
    """Seconds of the ClientApp's per-round collapse check (embeds a fixed local sample), alone."""
    model = build_ssl_model(cfg.ssl, cfg.model)
    model.backbone.load_state_dict(global_backbone)
    images = node_images(cfg, NODE_CONFIG)
    started = time.perf_counter()
    collapse_check(model.backbone, images, cfg.model, seed=cfg.seed)
    return time.perf_counter() - started


def measure_method(method: str, size: dict[str, Any]) -> dict[str, Any]:
    cfg = RunConfig.from_flat({"ssl.method": method, "data.partition": "iid", "data.max-samples": size["samples"],
                               "train.batch-size": size["batch_size"]})
    torch.manual_seed(cfg.seed)
    arrays = backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))
    record = ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()})
    global_backbone = strip_prefix(to_torch(arrays))
    ours(cfg, record)  # warm-up: loads and partitions Fashion-MNIST once, as a warm ClientApp has
    pairs = []
    for i in range(size["repeats"]):
        order = ("ours", "reference") if i % 2 == 0 else ("reference", "ours")
        timed = {arm: ours(cfg, record) if arm == "ours" else reference(cfg, global_backbone) for arm in order}
        timed["augmentation"] = augmentation_only(cfg)
        timed["collapse_check"] = collapse_only(cfg, global_backbone)
        pairs.append(timed)
    round_ratios = [p["ours"]["total"] / p["reference"]["total"] for p in pairs]
    loop_ratios = [p["ours"]["loop"] / p["reference"]["loop"] for p in pairs]
    med = statistics.median
    ref_loop = med(p["reference"]["loop"] for p in pairs)
    return {
        "method": method,
        "steps": pairs[0]["ours"]["steps"],
        "ours_round_s": med(p["ours"]["total"] for p in pairs),
        "ours_loop_s": med(p["ours"]["loop"] for p in pairs),
        "reference_total_s": med(p["reference"]["total"] for p in pairs),
        "reference_loop_s": ref_loop,
        "augmentation_s": med(p["augmentation"] for p in pairs),
        "augmentation_share": med(p["augmentation"] for p in pairs) / ref_loop,
        "collapse_check_s": med(p["collapse_check"] for p in pairs),
        "collapse_check_share": med(p["collapse_check"] for p in pairs) / med(p["reference"]["total"] for p in pairs),
        "round_ratio": med(round_ratios),
        "round_ratio_min": min(round_ratios),
        "round_ratio_max": max(round_ratios),
        "loop_ratio": med(loop_ratios),
        "loop_ratio_min": min(loop_ratios),
        "loop_ratio_max": max(loop_ratios),
        "images_per_s_reference": pairs[0]["reference"]["steps"] * cfg.train.batch_size / ref_loop,
        "loss_ours": pairs[0]["ours"]["loss"],
        "loss_reference": pairs[0]["reference"]["loss"],
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
    worst_round = max(m["round_ratio"] for m in methods)
    worst_loop = max(m["loop_ratio"] for m in methods)
    return {
        "reference": "a plain PyTorch loop (same SSLModel, Adam, DataLoader and seeds, so the same batches)",
        "goals": [
            goal("client round overhead", "<= 5 % slower", worst_round - 1, worst_round - 1 <= GOAL,
                 "train_round end to end vs the plain script; worst method, median of interleaved pairs",
                 "percent"),
            goal("client loop overhead", "<= 5 % slower", worst_loop - 1, worst_loop - 1 <= GOAL,
                 "train_local's loop vs the plain loop", "percent"),
        ],
        "results": {"threads": 1, "samples": size["samples"], "batch_size": size["batch_size"],
                    "repeats": size["repeats"], "methods": methods},
    }
