"""Centralised SSL recipe search for fedssl's SmallCNN on Fashion-MNIST: which change beats raw pixels?

Usage: nice -n 10 .venv/bin/python scripts/recipe_search.py VARIANT [VARIANT ...] [--images N] [--seed S]
Appends one record per variant to bench/results/recipe_search.json (key: variant@images@seed);
backbones go to /tmp/recipe-search-ckpt. The committed results were scored before the probe
centred encoder embeddings (``knn_fc``/``knn_prefc``: uncentred; pixels: centred).
Reuses fedssl.train.train_local, fedssl.ssl.build_ssl_model, fedssl.probe / fedssl.knn unchanged;
variants are train-config values (``train.optimizer``, ``train.lr``, ``train.schedule``), a backbone
passed to build_ssl_model, and, for augmentations no config key describes, train_local's ``transform`` hook.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedssl._torchvision import transforms_v2 as T
from fedssl.augment import normalization
from fedssl.config import EvalConfig, ModelConfig, SSLConfig, TrainConfig
from fedssl.data.fashion_mnist import load_fashion_mnist
from fedssl.knn import embed, knn_top1
from fedssl.models.encoders import SmallCNN
from fedssl.probe import evaluate_backbone, evaluate_pixels, load_probe_tasks
from fedssl.ssl import build_ssl_model
from fedssl.train import train_local

torch.set_num_threads(1)  # one core: the other is left to whatever else runs

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "recipe_search.json"
CHECKPOINTS = Path("/tmp/recipe-search-ckpt")
EVAL = EvalConfig(tasks=("fashion-mnist",))
MODEL = ModelConfig()


# ---------------------------------------------------------------- architecture variants
class PreFC(nn.Module):
    """View of a backbone that stops before its fc (for the pre-fc kNN probe)."""

    def __init__(self, net: SmallCNN) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.features(x)


class SpatialSmallCNN(SmallCNN):
    """SmallCNN whose last block keeps the 3x3 layout: flatten 256x3x3 -> Linear -> 128."""

    def __init__(self, in_channels: int = 1, embedding_dim: int = 128, width: int = 32) -> None:
        super().__init__(in_channels, embedding_dim, width)
        assert isinstance(self.features[-2], nn.AdaptiveAvgPool2d)
        self.features[-2] = nn.Identity()
        self.fc = nn.Linear(8 * width * 9, embedding_dim)


ARCHS = {"smallcnn": SmallCNN, "spatial": SpatialSmallCNN}


def make_backbone(arch: str) -> nn.Module:
    return ARCHS[arch](MODEL.in_channels, MODEL.embedding_dim)


# ---------------------------------------------------------------- augmentation variants
def aug_mild(size, channels, mean, std):
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.75, 1.33), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.RandomAffine(degrees=10, translate=(0.1, 0.1))], p=0.5),
        T.RandomApply([T.ColorJitter(0.4, 0.4)], p=0.8),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(list(mean), list(std)),
    ])


def aug_strong(size, channels, mean, std):
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0), ratio=(0.75, 1.33), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.RandomAffine(degrees=15, translate=(0.1, 0.1))], p=0.5),
        T.RandomApply([T.ColorJitter(0.6, 0.6)], p=0.8),
        T.RandomApply([T.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.3),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(list(mean), list(std)),
        T.RandomErasing(p=0.5, scale=(0.02, 0.2)),
    ])


AUGS = {"mild": aug_mild, "strong": aug_strong}  # "default": the configured pipeline


# ---------------------------------------------------------------- optimiser variants
OPTIMIZERS = {  # train config values; "cos": cosine decay over the run's steps (train.schedule)
    "adam": {},
    "adam3e-3cos": {"optimizer": "adam", "lr": 3e-3, "schedule": "cosine"},
    "adam3e-4": {"optimizer": "adam", "lr": 3e-4},
    "sgd0.06cos": {"optimizer": "sgd", "lr": 0.06, "weight_decay": 5e-4, "schedule": "cosine"},
}


# ---------------------------------------------------------------- variants
BASE = dict(arch="smallcnn", aug="default", opt="adam", temperature=0.2, bs=128)
VARIANTS = {
    "baseline": {},
    "spatial": {"arch": "spatial"},
    "aug_mild": {"aug": "mild"},
    "aug_strong": {"aug": "strong"},
    "opt_adam3e-3cos": {"opt": "adam3e-3cos"},
    "opt_sgd0.06cos": {"opt": "sgd0.06cos"},
    "opt_adam3e-4": {"opt": "adam3e-4"},
    "temp0.1": {"temperature": 0.1},
    "temp0.5": {"temperature": 0.5},
    "bs64": {"bs": 64},
    "bs32": {"bs": 32},
}


def parse_variant(name: str) -> dict:
    """A named variant, or 'combo:key=val,key=val'."""
    if name.startswith("combo:"):
        spec = dict(BASE)
        for kv in name[6:].split(","):
            k, v = kv.split("=")
            spec[k] = float(v) if k == "temperature" else int(v) if k == "bs" else v
        return spec
    return {**BASE, **VARIANTS[name]}


def probe(backbone, tasks) -> float:
    return evaluate_backbone(backbone, tasks, MODEL, EVAL)["fashion-mnist"]


@torch.no_grad()
def probe_both(backbone, tasks) -> dict:
    """kNN after fc and on the pre-fc features, from one pass (same embed/knn_top1 as evaluate_backbone)."""
    mean, std = normalization(MODEL.in_channels)
    out = {"knn_fc": [], "knn_prefc": []}
    for task in tasks:
        g = embed(PreFC(backbone), task.gallery, mean, std, MODEL.in_channels)
        q = embed(PreFC(backbone), task.queries, mean, std, MODEL.in_channels)
        gl, ql = torch.from_numpy(task.gallery_labels), torch.from_numpy(task.query_labels)
        was = backbone.training
        backbone.eval()
        out["knn_prefc"].append(knn_top1(g, gl, q, ql, EVAL.knn_k, EVAL.knn_t))
        out["knn_fc"].append(knn_top1(backbone.fc(g), gl, backbone.fc(q), ql, EVAL.knn_k, EVAL.knn_t))
        backbone.train(was)
    return {k: v[0] for k, v in out.items()}


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def run_variant(name: str, images_budget: int, seed: int, tasks, x_train) -> dict:
    spec = parse_variant(name)
    seed_all(seed)
    ssl_cfg = SSLConfig(temperature=spec["temperature"])
    model = build_ssl_model(ssl_cfg, MODEL, backbone=make_backbone(spec["arch"]))
    steps = images_budget // spec["bs"]
    train_cfg = TrainConfig(local_epochs=100, batch_size=spec["bs"], max_steps=steps, **OPTIMIZERS[spec["opt"]])
    mean, std = normalization(MODEL.in_channels)
    transform = None if spec["aug"] == "default" else AUGS[spec["aug"]](MODEL.image_size, MODEL.in_channels, mean, std)
    t0 = time.perf_counter()
    res = train_local(model, x_train, MODEL, train_cfg, seed=seed, transform=transform)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    scores = probe_both(model.backbone, tasks)
    CHECKPOINTS.mkdir(exist_ok=True)
    torch.save(model.backbone.state_dict(), CHECKPOINTS / f"{name.replace(':', '_')}@{images_budget}@seed{seed}.pt")
    return {"variant": name, "spec": spec, "images_seen": res.num_examples, "steps": res.steps,
            "loss": res.loss, "train_s": round(train_s, 1), "eval_s": round(time.perf_counter() - t1, 1),
            "seed": seed, **scores}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants", nargs="+", help="names from VARIANTS, 'refs', or combo:k=v,...")
    ap.add_argument("--images", type=int, default=40000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    tasks = load_probe_tasks(EVAL, MODEL.image_size, seed=0)  # same gallery/query draw as the server
    x_train, _ = load_fashion_mnist("train")
    for name in args.variants:
        if name == "refs":  # raw pixels + random-init encoders (both archs), same probe
            t0 = time.perf_counter()
            rec = {"pixels": evaluate_pixels(tasks, EVAL)["fashion-mnist"]}
            for arch in ("smallcnn", "spatial"):
                for s in (args.seed, args.seed + 1):
                    seed_all(s)
                    rec[f"random_{arch}_seed{s}"] = probe_both(make_backbone(arch), tasks)
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            key = f"refs@seed{args.seed}"
        else:
            rec = run_variant(name, args.images, args.seed, tasks, x_train)
            key = f"{name}@{args.images}@seed{args.seed}"
        print(key, json.dumps(rec), flush=True)
        results[key] = rec
        RESULTS.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
