"""Split learning (MocoSFL) vs full local training (FedAvg-MoCo) on Fashion-MNIST, 2 classes per device.

``python -m bench.bench_split [--quick]`` writes ``bench/results/split.json`` (``bench/results/quick/``
with ``--quick``). Cells, at the same number of images each device trains on:

- ``split`` with feature sharing (one queue of keys on the server) and without (a queue per device);
- ``fedavg-moco``: every device trains the whole encoder with MoCo (its own queue), FedAvg each round.

The training maths is the product code (``fedssl/split/``, ``fedssl/train.py``, the FedAvg rule);
messages are not sent (the Flower path is tested in tests/test_split_federation.py), so the figures
are quality and device cost, not latency. Device cost per training image: FLOPs (PyTorch's
``FlopCounterMode`` over one real training step), training-state memory (weights, gradients, Adam
moments, momentum copy and the activations autograd saves for backward, counted exactly with
``saved_tensors_hooks``) and bytes on the wire (activations up, gradients down, stems at each sync
amortised; FedAvg: the backbone down and up once per round).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.machine import describe
from bench.results import goal, write_result
from fedssl.config import EvalConfig, RunConfig
from fedssl.data.fashion_mnist import fashion_mnist_shard
from fedssl.models.encoders import build_encoder
from fedssl.probe import load_probe_tasks, probe_backbone, probe_pixels
from fedssl.split.build import build_split, encoder_arrays
from fedssl.split.device import SplitDevice, step_views
from fedssl.split.server import DeviceActivations
from fedssl.ssl import build_ssl_model
from fedssl.state import backbone_arrays, load_backbone, strip_prefix, to_numpy, to_torch
from fedssl.train import RoundPosition, learning_rate, train_local
from server_app.aggregation import build_rule

NAME = "split"
RESULTS = Path(__file__).resolve().parent / "results"
RESULT_KEYS = ("setup", "cells", "device_cost")
SIZES = {  # images per device = steps * local_batch = rounds * local_steps * batch
    "full": {"devices": 20, "steps": 150, "local_batch": 4, "sync": 10, "rounds": 6, "local_steps": 4, "batch": 25,
             "gallery": 2000, "queries": 500},
    "quick": {"devices": 4, "steps": 4, "local_batch": 4, "sync": 2, "rounds": 2, "local_steps": 1, "batch": 8,
              "gallery": 200, "queries": 50},
}
COMMON = {"ssl.method": "moco", "ssl.queue-size": 1024, "split.queue-size": 1024,
          "data.partition": "classes-per-client", "data.classes-per-client": 2, "train.lr": 0.002,
          "train.schedule": "cosine", "seed": int(os.environ.get("BENCH_SEED", "0"))}


def _config(size: dict[str, Any], **extra: Any) -> RunConfig:
    return RunConfig.from_flat({**COMMON, "mode": "split", "split.steps": size["steps"],
                                "split.local-batch": size["local_batch"], "split.sync-period": size["sync"],
                                "split.eval-every": size["sync"], **extra})


def _shards(cfg: RunConfig, n: int) -> list[np.ndarray]:
    return [fashion_mnist_shard(i, n, cfg.data.partition, alpha=cfg.data.alpha,
                                classes_per_client=cfg.data.classes_per_client, seed=cfg.seed) for i in range(n)]


def _probe(size: dict[str, Any], image_size: int, seed: int) -> tuple[EvalConfig, list]:
    eval_cfg = EvalConfig(tasks=("fashion-mnist",), gallery_size=size["gallery"], query_size=size["queries"])
    return eval_cfg, load_probe_tasks(eval_cfg, image_size, seed=seed)


def _knn(cfg: RunConfig, arrays: dict[str, np.ndarray], size: dict[str, Any]) -> float:
    encoder = build_encoder(cfg.model)
    encoder.load_state_dict(strip_prefix(to_torch(arrays)), strict=True)
    eval_cfg, tasks = _probe(size, cfg.model.image_size, cfg.seed)
    return probe_backbone(encoder, tasks, cfg.model, eval_cfg, linear=False).knn["fashion-mnist"]


def baselines(size: dict[str, Any]) -> list[dict[str, Any]]:
    """The same probe on raw pixels and on the random-init encoder every cell starts from."""
    cfg = _config(size)
    eval_cfg, tasks = _probe(size, cfg.model.image_size, cfg.seed)
    stems, server = build_split(cfg)
    return [{"cell": "raw pixels", "knn_top1": probe_pixels(tasks, eval_cfg, linear=False).knn["fashion-mnist"]},
            {"cell": "random-init encoder", "knn_top1": _knn(cfg, encoder_arrays(stems, server), size)}]


def run_split(size: dict[str, Any], sharing: bool) -> dict[str, Any]:
    """The split protocol in process: every device every step, stems averaged every ``sync`` steps."""
    cfg = _config(size, **{"split.feature-sharing": sharing})
    stems, server = build_split(cfg)
    shards, rule = _shards(cfg, size["devices"]), build_rule(cfg.aggregation)
    started, losses, periods = time.perf_counter(), [], -(-size["steps"] // size["sync"])
    optimizer_states: list[dict | None] = [None] * size["devices"]
    for period in range(periods):
        devices = []
        for _ in shards:
            device = SplitDevice(cfg.model, cfg.split.cut, cfg.ssl.momentum)
            device.load_transport_state(to_torch(stems))
            devices.append(device)
        optimizers = [d.optimizer(cfg.train, s) for d, s in zip(devices, optimizer_states, strict=True)]
        for i in range(size["sync"]):
            step = period * size["sync"] + i
            lr = learning_rate(cfg.train, RoundPosition(period + 1, periods), i, size["sync"])
            views = [step_views(x, size["local_batch"], cfg.model, cfg.train, seed=step * 1009 + d)
                     for d, x in enumerate(shards)]
            result = server.step([DeviceActivations(d, *dev.activations(v))
                                  for d, (dev, v) in enumerate(zip(devices, views, strict=True))], lr)
            for d, (dev, v, opt) in enumerate(zip(devices, views, optimizers, strict=True)):
                dev.backward_step(v, result.gradients[d], opt, lr)
            losses.append(result.loss)
        optimizer_states = [o.state_dict() for o in optimizers]
        updates = [to_numpy(d.transport_state()) for d in devices]
        stems = rule(updates, [1.0] * len(updates), [0.0] * len(updates), stems)
    seconds = time.perf_counter() - started
    return {"cell": f"split, feature sharing {'on' if sharing else 'off'}", "knn_top1": _knn(cfg, encoder_arrays(
        stems, server), size), "loss_first": float(np.mean(losses[:5])), "loss_last": float(np.mean(losses[-5:])),
        "images_per_device": size["steps"] * size["local_batch"], "seconds": seconds}


def run_fedavg(size: dict[str, Any]) -> dict[str, Any]:
    """Today's full mode: each device trains the whole encoder with MoCo; FedAvg every round."""
    cfg = RunConfig.from_flat({**COMMON, "train.batch-size": size["batch"], "train.max-steps": size["local_steps"],
                               "num-rounds": size["rounds"], "data.max-samples": size["batch"] * size["local_steps"]})
    torch.manual_seed(cfg.seed)
    global_arrays = backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))
    shards, rule = _shards(cfg, size["devices"]), build_rule(cfg.aggregation)
    models = [build_ssl_model(cfg.ssl, cfg.model) for _ in shards]
    states: list[dict | None] = [None] * len(shards)
    started, losses = time.perf_counter(), []
    for rnd in range(1, size["rounds"] + 1):
        updates = []
        for d, (model, images) in enumerate(zip(models, shards, strict=True)):
            load_backbone(model, global_arrays)
            res = train_local(model, images, cfg.model, cfg.train, seed=rnd * 1009 + d,
                              max_samples=cfg.data.max_samples, position=RoundPosition(rnd, size["rounds"]),
                              optimizer_state=states[d])
            states[d] = res.optimizer_state
            updates.append(backbone_arrays(model))
            losses.append(res.loss)
        global_arrays = rule(updates, [1.0] * len(updates), [0.0] * len(updates), global_arrays)
    return {"cell": "fedavg-moco (full local training)", "knn_top1": _knn(cfg, global_arrays, size),
            "loss_first": float(np.mean(losses[:size["devices"]])),
            "loss_last": float(np.mean(losses[-size["devices"]:])),
            "images_per_device": size["rounds"] * size["local_steps"] * size["batch"],
            "seconds": time.perf_counter() - started}


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs (the activation memory)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def device_cost(size: dict[str, Any]) -> dict[str, Any]:
    """Per training image on the device: FLOPs, training-state memory, bytes on the wire; split vs full."""
    cfg = _config(size)
    images = _shards(cfg, 1)[0]
    b, B = size["local_batch"], size["batch"]
    stems, _ = build_split(cfg)
    device = SplitDevice(cfg.model, cfg.split.cut, cfg.ssl.momentum)
    device.load_transport_state(to_torch(stems))
    views = step_views(images, b, cfg.model, cfg.train, seed=1)
    optimizer = device.optimizer(cfg.train)
    with FlopCounterMode(display=False) as split_flops:
        online, momentum = device.activations(views)  # the forward message
        device.backward_step(views, torch.ones_like(online), optimizer, 1e-3)  # the backward message
    split_saved = _saved_bytes(lambda: device.online(views))
    split_state = _param_bytes(device.online) * 4 + _param_bytes(device.momentum_stem)  # w, grad, Adam m and v; EMA
    acts = online.numel() * 4
    stem_bytes = sum(v.nbytes for k, v in stems.items())
    split_wire = (2 * acts + acts) / b + 2 * stem_bytes / (size["sync"] * b)  # up: 2 stems, down: grad; sync

    full = RunConfig.from_flat({**COMMON, "train.batch-size": B, "train.max-steps": 1, "data.max-samples": B})
    model = build_ssl_model(full.ssl, full.model)
    with FlopCounterMode(display=False) as full_flops:
        train_local(model, images, full.model, full.train, seed=1, max_samples=B)
    a, c = (step_views(images, B, full.model, full.train, seed=2).chunk(2))
    full_saved = _saved_bytes(lambda: model(a, c))
    trained = [p for p in model.parameters() if p.requires_grad]
    full_state = sum(p.numel() * p.element_size() for p in trained) * 4 + _param_bytes(model.target)
    backbone = sum(v.nbytes for v in backbone_arrays(model).values())
    full_wire = 2 * backbone / (size["local_steps"] * B)
    rows = {
        "split": {"flops_per_image": split_flops.get_total_flops() / b, "memory_bytes": split_saved + split_state,
                  "memory_per_image_bytes": (split_saved + split_state) / b, "bytes_per_image": split_wire,
                  "batch": b, "activation_bytes_per_image_fp32": 3 * acts / b},
        "full": {"flops_per_image": full_flops.get_total_flops() / B, "memory_bytes": full_saved + full_state,
                 "memory_per_image_bytes": (full_saved + full_state) / B, "bytes_per_image": full_wire, "batch": B},
    }
    rows["ratios_split_over_full"] = {k: rows["split"][k] / rows["full"][k]
                                      for k in ("flops_per_image", "memory_bytes", "bytes_per_image")}
    return rows


def run(quick: bool) -> dict[str, Any]:
    logging.getLogger("fedssl.data.partition").setLevel(logging.ERROR)  # "class k is held by no client", per shard
    size = SIZES["quick" if quick else "full"]
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    cells = [run_split(size, sharing=True), run_split(size, sharing=False), run_fedavg(size), *baselines(size)]
    cost = device_cost(size)
    best_split = max(cells[0]["knn_top1"], cells[1]["knn_top1"])
    return {
        "goals": [
            goal("split kNN top-1 minus FedAvg-MoCo at equal images per device", "none set",
                 best_split - cells[2]["knn_top1"], None, unit="points"),
            goal("device FLOPs per image, split / full", "< 1", cost["ratios_split_over_full"]["flops_per_image"],
                 cost["ratios_split_over_full"]["flops_per_image"] < 1, unit="ratio"),
        ],
        "reference": "fedavg-moco at the same images per device",
        "results": {"setup": {**size, "encoder": "smallcnn (block-3 read-out)", "cut": 1, "classes_per_device": 2},
                    "cells": cells, "device_cost": cost},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    machine, started = describe(), time.perf_counter()
    body = run(args.quick)
    seed = os.environ.get("BENCH_SEED", "0")
    name = f"{NAME}.json" if seed == "0" else f"{NAME}-seed{seed}.json"
    path = (RESULTS / "quick" if args.quick else RESULTS) / name
    write_result(path, {"benchmark": NAME, "quick": args.quick, "machine": machine,
                        "seconds": time.perf_counter() - started, "load_avg_end": round(os.getloadavg()[0], 2), **body})
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
