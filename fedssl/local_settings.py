"""Device-aware local settings: the batch size, precision, steps and threads one device trains with.

The run config sets the limits (``train.batch-size`` at most, ``train.max-steps``, ``device.*``);
each device picks within them from what it has (:mod:`fedssl.device_profile`), so a Jetson with
4 GB shared between CPU and GPU trains on smaller batches in bfloat16 where a data-centre GPU
takes the run's batch size, and a CPU keeps float32.

Training memory is estimated, not guessed: the model's parameters, their gradients and the
optimiser's state (counted from the real model), plus the activations autograd saves for the
backward pass, measured by two forward passes of the real model on 2 and 4 of the device's own
samples, augmented as in training, in the chosen precision. The difference gives the bytes per
sample; what does not grow with the batch (weights saved for backward, MoCo's queue) is counted once.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from fedssl.config import RunConfig
from fedssl.device_profile import MIB, DeviceProfile

PRECISION_BITS = {"fp32": 32, "bf16": 16, "fp16": 16}
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 1}  # tensors per parameter: Adam's two moments, SGD's momentum


@dataclass(frozen=True)
class Footprint:
    """Estimated training memory: ``fixed_bytes + bytes_per_sample x batch size``."""

    fixed_bytes: float  # parameters, gradients, optimiser state, batch-independent saved tensors
    bytes_per_sample: float  # activations saved for backward per sample (both views)

    def bytes_at(self, batch_size: int) -> float:
        return self.fixed_bytes + self.bytes_per_sample * batch_size


@dataclass(frozen=True)
class LocalSettings:
    """What this device trains with this round; reported in its reply (``device-*`` metrics)."""

    batch_size: int
    precision: str  # "fp32", "bf16" or "fp16"
    max_steps: int  # 0: no cap
    threads: int
    accelerator: str = "cpu"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES.get(self.precision)


def choose_precision(profile: DeviceProfile, requested: str) -> str:
    """``device.precision`` resolved on this device: "auto" picks bf16, then fp16 on CUDA, fp32 on CPU.

    Raises:
        ValueError: for bf16/fp16 on a device that does not support it.
    """
    if requested == "auto":
        if profile.accelerator == "cuda":
            return "bf16" if profile.bf16 else "fp16" if profile.fp16 else "fp32"
        return "fp32"
    if requested in AUTOCAST_DTYPES and not getattr(profile, requested):
        raise ValueError(f"run config 'device.precision' = {requested!r} is not supported by this device "
                         f"({profile.accelerator}, bf16={profile.bf16}, fp16={profile.fp16}); use 'auto' or 'fp32'")
    if requested not in PRECISION_BITS:
        raise ValueError(f"run config 'device.precision' = {requested!r} is not one of "
                         f"{['auto', *PRECISION_BITS]}")
    return requested


def measure_footprint(model: torch.nn.Module, views: tuple[torch.Tensor, torch.Tensor], optimizer: str,
                      precision: str = "fp32", device: str = "cpu") -> Footprint:
    """Training memory of ``model`` on two-view batches like ``views`` (4 samples at least) under ``precision``.

    ``views`` are what training feeds the model (``fedssl.train.sample_views``). Works on a copy
    (on ``device``, where autocast runs as in training), so the model's running statistics,
    queues and the global RNG are untouched.
    """
    view_a, view_b = views
    if len(view_a) < 4:
        raise ValueError(f"measuring the activation footprint needs 4 samples, got {len(view_a)}")
    params = list(model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in params if not p.requires_grad)
    state = trainable * (2 + OPTIMIZER_STATES.get(optimizer, 2)) + frozen  # weights, grads, optimiser state
    probe = copy.deepcopy(model).to(device).train()
    with torch.random.fork_rng(devices=[]):
        small, large = (_saved_bytes(probe, view_a[:n].to(device), view_b[:n].to(device), precision) for n in (2, 4))
    per_sample = max(0.0, (large - small) / 2)
    return Footprint(fixed_bytes=state + max(0.0, small - 2 * per_sample), bytes_per_sample=per_sample)


def _saved_bytes(model: torch.nn.Module, view_a: torch.Tensor, view_b: torch.Tensor, precision: str) -> float:
    """Bytes of the distinct tensors autograd saves for backward in one forward pass of two views."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is not None and view_a.device.type == "cpu":
        dtype = torch.bfloat16  # CPU autocast's half type; fp16 tensors have the same size
    autocast = torch.autocast(view_a.device.type, dtype=dtype) if dtype is not None else nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        model(view_a, view_b)
    return float(sum(storages.values()))


def step_cap(cfg: RunConfig) -> int:
    """Local steps a round may take (0: none): ``train.max-steps`` and what ``data.max-samples`` allows.

    The same bound the server screens replies with, so a device that picks a smaller batch does
    not take more steps than the run planned.
    """
    train, caps = cfg.train, [cfg.train.max_steps] if cfg.train.max_steps else []
    if cfg.data.max_samples:
        caps.append(train.local_epochs * max(1, cfg.data.max_samples // train.batch_size))
    return min(caps) if caps else 0


def choose_local_settings(profile: DeviceProfile, cfg: RunConfig,
                          footprint: Callable[[str], Footprint] | Footprint) -> LocalSettings:
    """The settings this device trains with: ``train.batch-size`` capped by memory, precision, steps, threads.

    ``footprint`` is the training-memory estimate, or a function of the precision that measures it.

    Raises:
        ValueError: for an unsupported ``device.precision``, or when not even ``device.min-batch-size``
            fits in ``device.memory-fraction`` of the device's memory.
    """
    dev = cfg.device
    precision = choose_precision(profile, dev.precision)
    fp = footprint(precision) if callable(footprint) else footprint
    budget = dev.memory_fraction * profile.memory_mb * MIB
    fits = math.floor((budget - fp.fixed_bytes) / fp.bytes_per_sample) if fp.bytes_per_sample else cfg.train.batch_size
    minimum = min(dev.min_batch_size, cfg.train.batch_size)
    if fits < minimum:
        raise ValueError(
            f"run config 'device.min-batch-size' = {dev.min_batch_size}: a batch of {minimum} needs "
            f"{fp.bytes_at(minimum) / MIB:.0f} MiB, more than 'device.memory-fraction' = {dev.memory_fraction} of "
            f"this device's {profile.memory_mb:.0f} MiB; lower it, or train a smaller model")
    return LocalSettings(batch_size=min(cfg.train.batch_size, fits), precision=precision, max_steps=step_cap(cfg),
                         threads=dev.threads or profile.cpus, accelerator=profile.accelerator)
