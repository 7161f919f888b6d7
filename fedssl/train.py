"""Local SSL training of one device for one round, and the collapse check of its embeddings."""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from fedssl.augment import TwoViewDataset, normalization, ssl_augmentation
from fedssl.collapse import rankme, z_std
from fedssl.config import ModelConfig, TrainConfig
from fedssl.knn import embed
from fedssl.ssl.base import SSLModel

log = logging.getLogger(__name__)
COLLAPSE_SAMPLE = 512  # a fixed sample of local images, embedded without augmentation


@dataclass
class LocalResult:
    """What a device reports besides its weights (the reply's metrics)."""

    loss: float
    num_examples: int
    steps: int
    seconds: float
    examples_per_s: float
    peak_mem_mb: float

    def as_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def train_local(model: SSLModel, images: np.ndarray, model_cfg: ModelConfig, train_cfg: TrainConfig,
                seed: int, max_samples: int = 0) -> LocalResult:
    """Run ``local_epochs`` of SSL on ``images`` (uint8 ``(N, C, H, W)``).

    A device with fewer images than a batch trains on one smaller batch.
    Raises:
        ValueError: if there are fewer than 2 images (no pair to contrast).
    """
    if len(images) < 2:
        raise ValueError(f"a client needs at least 2 images to train, has {len(images)}")
    rng = np.random.default_rng(seed)
    if max_samples and len(images) > max_samples:
        images = images[np.sort(rng.choice(len(images), max_samples, replace=False))]
    mean, std = normalization(model_cfg.in_channels)
    dataset = TwoViewDataset(images, ssl_augmentation(model_cfg.image_size, model_cfg.in_channels, mean, std))
    batch_size = min(train_cfg.batch_size, len(images))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    model.train()
    start, losses, seen, steps = time.perf_counter(), [], 0, 0
    for _ in range(train_cfg.local_epochs):
        for view_a, view_b in loader:
            loss = model(view_a, view_b)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"local loss became {float(loss)} at step {steps}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.after_step()
            losses.append(loss.item())
            seen += len(view_a)
            steps += 1
            if train_cfg.max_steps and steps >= train_cfg.max_steps:
                break
        if train_cfg.max_steps and steps >= train_cfg.max_steps:
            break
    seconds = time.perf_counter() - start
    return LocalResult(
        loss=float(np.mean(losses)),
        num_examples=seen,
        steps=steps,
        seconds=seconds,
        examples_per_s=seen / seconds if seconds > 0 else 0.0,
        peak_mem_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def collapse_check(backbone: torch.nn.Module, images: np.ndarray, model_cfg: ModelConfig,
                   seed: int) -> tuple[float, float]:
    """``(z_std, rankme)`` of un-augmented embeddings of a fixed local sample."""
    rng = np.random.default_rng(seed)
    sample = images[np.sort(rng.choice(len(images), min(COLLAPSE_SAMPLE, len(images)), replace=False))]
    mean, std = normalization(model_cfg.in_channels)
    z = embed(backbone, sample, mean, std, model_cfg.in_channels)
    return z_std(z), rankme(z)
