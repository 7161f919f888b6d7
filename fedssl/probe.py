"""Held-out probe tasks evaluated on the server after every round (the FASSL idea).

Each task is a gallery and a query set with labels; the score is weighted kNN
top-1 of the backbone's embeddings. Baselines on raw pixels and on a randomly
initialised encoder give every figure its reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedssl.augment import normalization
from fedssl.config import EvalConfig, ModelConfig
from fedssl.data.digits import load_digits_images
from fedssl.data.fashion_mnist import load_fashion_mnist
from fedssl.knn import embed, knn_top1


@dataclass(frozen=True)
class ProbeTask:
    name: str
    gallery: np.ndarray  # (G, C, H, W) uint8
    gallery_labels: np.ndarray
    queries: np.ndarray  # (Q, C, H, W) uint8
    query_labels: np.ndarray


def _subset(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, min(size, n), replace=False))


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[-1] == size:
        return images
    x = F.interpolate(torch.from_numpy(images).float(), size=(size, size), mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def load_probe_tasks(cfg: EvalConfig, image_size: int, seed: int = 0) -> list[ProbeTask]:
    """Fashion-MNIST (gallery from train, queries from test) and digits (60/40 split)."""
    rng = np.random.default_rng(seed)
    tasks = []
    for name in cfg.tasks:
        if name == "fashion-mnist":
            xtr, ytr = load_fashion_mnist("train")
            xte, yte = load_fashion_mnist("test")
            g, q = _subset(len(xtr), cfg.gallery_size, rng), _subset(len(xte), cfg.query_size, rng)
            tasks.append(ProbeTask(name, _resize(xtr[g], image_size), ytr[g], _resize(xte[q], image_size), yte[q]))
        elif name == "digits":
            x, y = load_digits_images(image_size)
            perm = rng.permutation(len(x))
            cut = int(0.6 * len(x))
            g, q = np.sort(perm[:cut]), np.sort(perm[cut:])
            tasks.append(ProbeTask(name, x[g], y[g], x[q], y[q]))
        else:
            raise ValueError(f"eval.tasks: unknown probe task {name!r}; allowed: ['fashion-mnist', 'digits']")
    return tasks


def evaluate_backbone(backbone: nn.Module, tasks: list[ProbeTask], model_cfg: ModelConfig,
                      cfg: EvalConfig) -> dict[str, float]:
    """kNN top-1 per task: ``{task_name: accuracy}``."""
    mean, std = normalization(model_cfg.in_channels)
    scores = {}
    for task in tasks:
        g = embed(backbone, task.gallery, mean, std, model_cfg.in_channels)
        q = embed(backbone, task.queries, mean, std, model_cfg.in_channels)
        scores[task.name] = centred_knn_top1(g, q, task, cfg)
    return scores


def evaluate_pixels(tasks: list[ProbeTask], cfg: EvalConfig) -> dict[str, float]:
    """The raw-pixel baseline: kNN on flattened, mean-centred pixels."""
    scores = {}
    for task in tasks:
        g = torch.from_numpy(task.gallery.reshape(len(task.gallery), -1)).float() / 255
        q = torch.from_numpy(task.queries.reshape(len(task.queries), -1)).float() / 255
        scores[task.name] = centred_knn_top1(g, q, task, cfg)
    return scores


def centred_knn_top1(gallery: torch.Tensor, queries: torch.Tensor, task: ProbeTask, cfg: EvalConfig) -> float:
    """Weighted kNN top-1 after centring both sets on the gallery mean.

    Cosine kNN on uncentred vectors is dominated by what every image shares (background,
    a common offset); encoders and the pixel baseline are scored the same way so their
    figures compare.
    """
    centre = gallery.mean(0, keepdim=True)
    return knn_top1(gallery - centre, torch.from_numpy(task.gallery_labels), queries - centre,
                    torch.from_numpy(task.query_labels), cfg.knn_k, cfg.knn_t)
