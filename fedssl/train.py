"""Local SSL training of one device for one round, and the collapse check of its embeddings.

The learning rate follows one schedule across the whole federation (linear warmup, then
cosine decay over all rounds): the server tells the device which round it is, and the
device keeps its optimiser state between rounds, so a round continues training instead of
restarting it.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fedssl.augment import BatchAugment, TwoViewDataset, normalization, ssl_augmentation
from fedssl.collapse import rankme, z_std
from fedssl.config import ModelConfig, TrainConfig
from fedssl.knn import embed
from fedssl.ssl.base import SSLModel

log = logging.getLogger(__name__)
COLLAPSE_SAMPLE = 512  # a fixed sample of local images, embedded without augmentation
StepHook = Callable[[int, float], None]  # (step, loss) after every optimiser step; benchmarks time with it
ViewTransform = Callable[[torch.Tensor], torch.Tensor]  # uint8 (C, H, W) -> one random normalised view
# (data, batch size, seed) -> endless (view_a, view_b) batches; another modality's pipeline (fedssl.modality)
ViewSource = Callable[[np.ndarray, int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]


@dataclass(frozen=True)
class RoundPosition:
    """Where this round sits in the federation: the learning-rate schedule spans all rounds."""

    server_round: int = 1
    num_rounds: int = 1


@dataclass
class LocalResult:
    """What a device reports besides its weights (the reply's metrics), plus its optimiser state."""

    loss: float
    num_examples: int
    steps: int
    seconds: float
    examples_per_s: float
    peak_mem_mb: float
    lr: float = 0.0
    optimizer_state: dict[str, Any] | None = field(default=None, repr=False)

    def as_metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items() if k != "optimizer_state"}


def learning_rate(cfg: TrainConfig, position: RoundPosition, step: int, steps_per_round: int) -> float:
    """The schedule's learning rate at ``step`` of ``position``'s round.

    ``constant``: ``cfg.lr``. ``cosine``: linear warmup over ``cfg.warmup_rounds`` rounds, then
    cosine decay to 0 at the end of the last round [0].
    [0] SGDR, 2017, arXiv:1608.03983
    """
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (position.server_round - 1 + step / max(steps_per_round, 1))  # rounds done, fractional
    if progress < cfg.warmup_rounds:
        return cfg.lr * (progress + 1 / max(steps_per_round, 1)) / cfg.warmup_rounds
    span = max(position.num_rounds - cfg.warmup_rounds, 1e-9)
    done = min((progress - cfg.warmup_rounds) / span, 1.0)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * done))


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """``train.optimizer``: Adam, AdamW or SGD with momentum 0.9 (decoupled from the schedule)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    raise ValueError(f"train.optimizer = {cfg.optimizer!r} is not one of ['adam', 'adamw', 'sgd']")


def train_local(model: SSLModel, images: np.ndarray, model_cfg: ModelConfig, train_cfg: TrainConfig,
                seed: int, max_samples: int = 0, *, position: RoundPosition = RoundPosition(),
                optimizer_state: dict[str, Any] | None = None, on_step: StepHook | None = None,
                transform: ViewTransform | None = None, views: ViewSource | None = None,
                precision: str = "fp32", device: str = "cpu") -> LocalResult:
    """Run ``local_epochs`` of SSL on ``images`` (uint8 ``(N, C, H, W)``, or any samples ``views`` accepts).

    Each epoch visits a random sample of ``max_samples`` images (all if 0) in batches of
    ``batch_size`` (a device with fewer images trains on one smaller batch), capped at
    ``max_steps`` steps. ``optimizer_state`` (from the previous round's result) resumes Adam's
    moments; the result carries the new state. Hooks for benchmarks and experiments: ``on_step``
    is called after every optimiser step; ``transform`` (one random view of a uint8 image) replaces
    the configured augmentation; ``views`` (another modality's two-view batches, e.g. audio clips)
    replaces the image pipeline altogether. ``precision`` "bf16"/"fp16" runs the forward pass under
    autocast (fp16 with a gradient scaler) on ``device`` ("cpu" or "cuda"); the model comes back on the CPU.
    Raises:
        ValueError: if there are fewer than 2 images (no pair to contrast).
        FloatingPointError: if the loss stops being finite.
    """
    if len(images) < 2:
        raise ValueError(f"a client needs at least 2 images to train, has {len(images)}")
    rng = np.random.default_rng(seed)
    if max_samples and len(images) > max_samples:
        images = images[np.sort(rng.choice(len(images), max_samples, replace=False))]
    batch_size = min(train_cfg.batch_size, len(images))
    steps_per_epoch = len(images) // batch_size
    steps_per_round = steps_per_epoch * train_cfg.local_epochs
    if train_cfg.max_steps:
        steps_per_round = min(steps_per_round, train_cfg.max_steps)
    memory_format = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, train_cfg)
    if optimizer_state is not None:
        try:
            optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError) as exc:  # another method's or architecture's state: start afresh
            log.warning("optimizer state from the last round does not fit (%s); starting afresh", exc)
    model.train()
    start, losses, seen, lr = time.perf_counter(), [], 0, train_cfg.lr
    batches = (views(images, batch_size, seed) if views is not None
               else _two_view_batches(images, model_cfg, train_cfg, batch_size, seed, transform))
    for step, (view_a, view_b) in enumerate(batches):
        if step >= steps_per_round:
            break
        lr = learning_rate(train_cfg, position, step, steps_per_round)
        for group in optimizer.param_groups:
            group["lr"] = lr
        view_a, view_b = view_a.to(device), view_b.to(device)
        if view_a.dim() == 4:  # image batches; a waveform (batch, samples) has no channels-last layout
            view_a = view_a.contiguous(memory_format=memory_format)
            view_b = view_b.contiguous(memory_format=memory_format)
        with torch.autocast(device, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext():
            loss = model(view_a, view_b)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"local loss became {float(loss)} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        model.after_step()
        losses.append(loss.item())
        seen += len(view_a)
        if on_step is not None:
            on_step(step, losses[-1])
    model.to(device="cpu", memory_format=torch.contiguous_format)
    seconds = time.perf_counter() - start
    return LocalResult(
        loss=float(np.mean(losses)),
        num_examples=seen,
        steps=len(losses),
        seconds=seconds,
        examples_per_s=seen / seconds if seconds > 0 else 0.0,
        peak_mem_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        lr=lr,
        optimizer_state=optimizer.state_dict(),
    )


def sample_views(images: np.ndarray, model_cfg: ModelConfig, train_cfg: TrainConfig, batch_size: int = 4,
                 views: ViewSource | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``(view_a, view_b)`` batch as training would feed it (samples repeated if too few), RNG untouched.

    What :func:`fedssl.local_settings.measure_footprint` measures activations on.
    """
    data = images[np.arange(batch_size) % len(images)]
    with torch.random.fork_rng(devices=[]):
        batches = views(data, batch_size, 0) if views is not None else _two_view_batches(
            data, model_cfg, train_cfg, batch_size, 0)
        return next(iter(batches))


def _two_view_batches(images: np.ndarray, model_cfg: ModelConfig, train_cfg: TrainConfig, batch_size: int,
                      seed: int, transform: ViewTransform | None = None):
    """Endless ``(view_a, view_b)`` batches, epoch after epoch, from the chosen augmentation pipeline."""
    mean, std = normalization(model_cfg.in_channels)
    generator = torch.Generator().manual_seed(seed)
    if train_cfg.augmentation == "per-sample" or transform is not None:
        dataset = TwoViewDataset(images, transform or ssl_augmentation(
            model_cfg.image_size, model_cfg.in_channels, mean, std, train_cfg.augmentation_params()))
        while True:
            yield from DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator)
    augment = BatchAugment(mean, std, train_cfg.augmentation_params())
    data = torch.from_numpy(np.array(images, dtype=np.uint8))  # (N, C, H, W), an own writable copy
    while True:
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data) - batch_size + 1, batch_size):
            batch = data[order[start:start + batch_size]]
            yield augment(batch, generator), augment(batch, generator)


def collapse_check(backbone: torch.nn.Module, images: np.ndarray, model_cfg: ModelConfig,
                   seed: int, embed_fn: Callable[[torch.nn.Module, np.ndarray], torch.Tensor] | None = None
                   ) -> tuple[float, float]:
    """``(z_std, rankme)`` of un-augmented embeddings of a fixed local sample (``embed_fn``: another modality's)."""
    rng = np.random.default_rng(seed)
    sample = images[np.sort(rng.choice(len(images), min(COLLAPSE_SAMPLE, len(images)), replace=False))]
    if embed_fn is not None:
        z = embed_fn(backbone, sample)
    else:
        mean, std = normalization(model_cfg.in_channels)
        z = embed(backbone, sample, mean, std, model_cfg.in_channels)
    return z_std(z), rankme(z)
