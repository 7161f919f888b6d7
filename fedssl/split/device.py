"""The device's half of a MocoSFL step: a small stem, its momentum copy, and a seeded batch.

A device cannot hold an autograd graph between the "forward" and the "backward" message (each
message may run in a fresh process), so it recomputes the forward pass on the backward message:
the batch and both augmented views come from a seed the server sends with both messages, and the
stem's weights do not change in between, so the recomputed activations equal the ones sent.
BatchNorm running statistics are updated once per step, on the backward pass only.
[0] MocoSFL, Li et al., ICLR 2023
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fedssl.augment import BatchAugment, normalization
from fedssl.config import ModelConfig, TrainConfig
from fedssl.models.encoders import build_encoder
from fedssl.split.cut import Stem, split_encoder
from fedssl.ssl.base import MomentumTarget
from fedssl.train import build_optimizer

ONLINE, MOMENTUM = "online.", "momentum."  # prefixes of the two stems in what travels


def step_views(images: np.ndarray, batch: int, model: ModelConfig, train: TrainConfig, seed: int) -> Tensor:
    """Two augmented views of a seeded random batch of ``images``: the same tensor for the same seed.

    Shape: images uint8 (N, C, H, W) -> float32 (2 * min(batch, N), C, H, W), view a first.
    """
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    chosen = torch.from_numpy(np.array(images[np.sort(rng.choice(len(images), min(batch, len(images)),
                                                                  replace=False))], dtype=np.uint8))
    mean, std = normalization(model.in_channels)
    augment = BatchAugment(mean, std, train.augmentation_params())
    return torch.cat([augment(chosen, generator), augment(chosen, generator)])


class SplitDevice(nn.Module):
    """The online stem a device trains and the momentum stem that follows it (never trained by SGD)."""

    def __init__(self, model: ModelConfig, cut: int, momentum: float) -> None:
        super().__init__()
        self.online: Stem = split_encoder(build_encoder(model), model, cut)[0]
        self.target = MomentumTarget(self.online)
        self.momentum = momentum

    @property
    def momentum_stem(self) -> nn.Module:
        return self.target.net[0]

    @torch.no_grad()
    def activations(self, views: Tensor) -> tuple[Tensor, Tensor]:
        """``(online, momentum)`` activations of ``views``, in training mode (batch statistics).

        Running statistics are restored afterwards: they move on the backward pass only.
        """
        saved = {k: v.clone() for k, v in self.state_dict().items()}
        self.train()
        out = self.online(views), self.target(views)
        self.load_state_dict(saved)
        return out

    def backward_step(self, views: Tensor, grad: Tensor, optimizer: torch.optim.Optimizer, lr: float) -> None:
        """Recompute the online activations, back-propagate the server's gradient, step, follow with EMA."""
        self.train()
        out = self.online(views)
        if out.shape != grad.shape:
            raise ValueError(f"gradient {tuple(grad.shape)} does not match the activations {tuple(out.shape)}")
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        out.backward(grad.to(out.dtype))
        optimizer.step()
        self.target.update(nn.Sequential(self.online), self.momentum)  # weights EMA, BN statistics copied

    def optimizer(self, train: TrainConfig, state: dict[str, Any] | None = None) -> torch.optim.Optimizer:
        """An optimiser of the online stem, resuming ``state`` when it fits."""
        optimizer = build_optimizer(list(self.online.parameters()), train)
        if state is not None:
            try:
                optimizer.load_state_dict(state)
            except (ValueError, KeyError):
                pass  # another cut's state: start afresh
        return optimizer

    def transport_state(self) -> dict[str, Tensor]:
        """Both stems, keys prefixed ``online.`` / ``momentum.`` (encoder keys after the prefix)."""
        return ({ONLINE + k: v for k, v in self.online.state_dict().items()}
                | {MOMENTUM + k: v for k, v in self.momentum_stem.state_dict().items()})

    def load_transport_state(self, state: Mapping[str, Tensor]) -> None:
        """Load what :meth:`transport_state` gives (every key must match)."""
        self.online.load_state_dict({k[len(ONLINE):]: v for k, v in state.items() if k.startswith(ONLINE)})
        self.momentum_stem.load_state_dict({k[len(MOMENTUM):]: v for k, v in state.items()
                                            if k.startswith(MOMENTUM)})
