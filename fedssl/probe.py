"""Held-out probe tasks evaluated on the server after every round (the FASSL idea).

Each task is a gallery and a query set with labels. The score that picks models is weighted
kNN top-1 at ``eval.knn-k`` over exact cosine nearest neighbours of the backbone's output embeddings,
as they are: no centring, no standardisation, exactly what retrieval with the exported model does on a
device (``export/retrieve/``). kNN at ``eval.report-k``, the same kNN after centring both sets on the
gallery mean (a secondary figure: it hides a collapse to one point plus a small spread, which exact
retrieval does not survive) and a linear probe (logistic regression on frozen, standardised embeddings
of ``eval.linear-labels`` labelled gallery images) are reported beside it; video tasks add retrieval top-5
(a hit if any of the 5 nearest gallery items has the query's label). Baselines on raw pixels and
on a randomly initialised encoder are scored the same way and give every figure its reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedssl.augment import normalization
from fedssl.config import EvalConfig, ModelConfig
from fedssl.data.digits import load_digits_images
from fedssl.data.fashion_mnist import load_fashion_mnist
from fedssl.knn import embed, knn_top1, retrieval_top_k
from fedssl.registry import Registry


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


# loader(eval config, image size, rng) -> the task's gallery and queries
TaskLoader = Callable[[EvalConfig, int, np.random.Generator], ProbeTask]
PROBE_TASKS: Registry[TaskLoader] = Registry("eval.tasks")


@PROBE_TASKS.register("fashion-mnist")
def _fashion_mnist(cfg: EvalConfig, image_size: int, rng: np.random.Generator) -> ProbeTask:
    """Gallery from the train split, queries from the test split."""
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    g, q = _subset(len(xtr), cfg.gallery_size, rng), _subset(len(xte), cfg.query_size, rng)
    return ProbeTask("fashion-mnist", _resize(xtr[g], image_size), ytr[g], _resize(xte[q], image_size), yte[q])


@PROBE_TASKS.register("digits")
def _digits(cfg: EvalConfig, image_size: int, rng: np.random.Generator) -> ProbeTask:
    """scikit-learn's digits, out of domain: a 60/40 gallery/query split."""
    x, y = load_digits_images(image_size)
    perm = rng.permutation(len(x))
    cut = int(0.6 * len(x))
    g, q = np.sort(perm[:cut]), np.sort(perm[cut:])
    return ProbeTask("digits", x[g], y[g], x[q], y[q])


def load_probe_tasks(cfg: EvalConfig, image_size: int, seed: int = 0) -> list[ProbeTask]:
    """The tasks named in ``cfg.tasks``, in that order, drawn with one seeded generator.

    Raises:
        ValueError: for a task that is not registered in ``PROBE_TASKS``.
    """
    loaders = [PROBE_TASKS.get(name) for name in cfg.tasks]
    rng = np.random.default_rng(seed)
    return [load(cfg, image_size, rng) for load in loaders]


RETRIEVAL_K = 5  # retrieval top-5, reported beside top-1 for clip retrieval (FedVSSL, CtP)


@dataclass(frozen=True)
class ProbeScores:
    """Per task: kNN top-1 at ``eval.knn-k`` (the selection score), at ``eval.report-k``, linear probe, the
    centred kNN at ``eval.knn-k`` (secondary) and, where a modality asks for it, retrieval top-5."""

    knn: dict[str, float]
    knn_report: dict[str, float]
    linear: dict[str, float]
    knn_centred: dict[str, float]
    retrieval_top5: dict[str, float] = field(default_factory=dict)  # empty unless scored with ``top5=True``

    def as_dict(self) -> dict[str, dict[str, float]]:
        out = {"knn": self.knn, "knn_report": self.knn_report, "linear": self.linear, "knn_centred": self.knn_centred}
        return {**out, "retrieval_top5": self.retrieval_top5} if self.retrieval_top5 else out


def evaluate_backbone(backbone: nn.Module, tasks: list[ProbeTask], model_cfg: ModelConfig,
                      cfg: EvalConfig) -> dict[str, float]:
    """kNN top-1 per task: ``{task_name: accuracy}``."""
    return probe_backbone(backbone, tasks, model_cfg, cfg, linear=False).knn


def probe_backbone(backbone: nn.Module, tasks: list[ProbeTask], model_cfg: ModelConfig, cfg: EvalConfig,
                   linear: bool = True) -> ProbeScores:
    """Every probe score of a backbone's embeddings on every task."""
    mean, std = normalization(model_cfg.in_channels)
    embeddings = {}
    for task in tasks:
        embeddings[task.name] = (embed(backbone, task.gallery, mean, std, model_cfg.in_channels),
                                 embed(backbone, task.queries, mean, std, model_cfg.in_channels))
    return score_embeddings(embeddings, tasks, cfg, linear)


@torch.no_grad()
def calibrate_batchnorm(backbone: nn.Module, images: np.ndarray, model_cfg: ModelConfig,
                        batch_size: int = 500) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on unlabeled ``images`` (uint8 ``(N, C, H, W)``).

    Gives the random-init baseline the same per-dimension standardisation a trained encoder
    learns from data, so that what training adds is not confused with BatchNorm statistics.
    """
    mean, std = normalization(model_cfg.in_channels)
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    norms = [mod for mod in backbone.modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over all batches
    backbone.train()
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size]).float() / 255.0
        backbone((x.expand(-1, model_cfg.in_channels, -1, -1) - m) / s)
    for bn in norms:
        bn.momentum = 0.1
    return backbone.eval()


def evaluate_pixels(tasks: list[ProbeTask], cfg: EvalConfig) -> dict[str, float]:
    """The raw-pixel baseline's kNN top-1 per task."""
    return probe_pixels(tasks, cfg, linear=False).knn


def probe_pixels(tasks: list[ProbeTask], cfg: EvalConfig, linear: bool = True) -> ProbeScores:
    """The raw-pixel baseline: the same probes on flattened pixels in [0, 1]."""
    embeddings = {}
    for task in tasks:
        embeddings[task.name] = (torch.from_numpy(task.gallery.reshape(len(task.gallery), -1)).float() / 255,
                                 torch.from_numpy(task.queries.reshape(len(task.queries), -1)).float() / 255)
    return score_embeddings(embeddings, tasks, cfg, linear)


def score_embeddings(embeddings: dict[str, tuple[torch.Tensor, torch.Tensor]], tasks: list[ProbeTask],
                     cfg: EvalConfig, linear: bool, top5: bool = False) -> ProbeScores:
    """Every probe on precomputed (gallery, queries) embeddings per task; any modality's embeddings.

    ``top5`` adds retrieval top-5 (:data:`RETRIEVAL_K`; exact cosine, no centring) per task.
    """
    knn, report, lin, centred, top = {}, {}, {}, {}, {}
    for task in tasks:
        g, q = embeddings[task.name]
        knn[task.name] = retrieval_knn_top1(g, q, task, cfg)
        report[task.name] = retrieval_knn_top1(g, q, task, cfg, k=cfg.report_k)
        centred[task.name] = centred_knn_top1(g, q, task, cfg)
        if linear:
            lin[task.name] = linear_probe_top1(g, q, task, cfg.linear_labels)
        if top5:
            top[task.name] = retrieval_top_k(g, torch.from_numpy(task.gallery_labels), q,
                                             torch.from_numpy(task.query_labels), RETRIEVAL_K)
    return ProbeScores(knn, report, lin, centred, top)


def linear_probe_top1(gallery: torch.Tensor, queries: torch.Tensor, task: ProbeTask, num_labels: int,
                      weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Top-1 of a multinomial logistic regression trained on ``num_labels`` labelled gallery embeddings.

    Features are standardised with the training set's statistics; full-batch L-BFGS, so the
    result depends only on the data (no learning rate to tune).
    Shape: gallery (G, dim), queries (Q, dim) -> accuracy on the queries
    """
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(len(gallery), min(num_labels, len(gallery)), replace=False))
    x, y = gallery[train].float(), torch.from_numpy(task.gallery_labels[train]).long()
    centre, scale = x.mean(0, keepdim=True), x.std(0, keepdim=True) + 1e-6
    x = (x - centre) / scale
    num_classes = int(max(task.gallery_labels.max(), task.query_labels.max())) + 1
    layer = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=200, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(layer(x), y) + weight_decay * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        predictions = layer((queries.float() - centre) / scale).argmax(1)
    return float((predictions == torch.from_numpy(task.query_labels).long()).float().mean())


def retrieval_knn_top1(gallery: torch.Tensor, queries: torch.Tensor, task: ProbeTask, cfg: EvalConfig,
                       k: int | None = None) -> float:
    """Weighted kNN top-1 over exact cosine neighbours of the embeddings as given: what a device's retrieval sees."""
    return knn_top1(gallery, torch.from_numpy(task.gallery_labels), queries, torch.from_numpy(task.query_labels),
                    k or cfg.knn_k, cfg.knn_t)


def centred_knn_top1(gallery: torch.Tensor, queries: torch.Tensor, task: ProbeTask, cfg: EvalConfig,
                     k: int | None = None) -> float:
    """Weighted kNN top-1 after centring both sets on the gallery mean (secondary: not what a device does).

    Centring removes what every image shares (background, a common offset), but it also rescues an
    encoder whose embeddings collapsed to one point plus a small spread: exact retrieval with that
    encoder fails while this figure stays high, so it never picks models.
    """
    centre = gallery.mean(0, keepdim=True)
    return knn_top1(gallery - centre, torch.from_numpy(task.gallery_labels), queries - centre,
                    torch.from_numpy(task.query_labels), k or cfg.knn_k, cfg.knn_t)

