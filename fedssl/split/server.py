"""The server's half of a MocoSFL step: concatenated activations in, per-device gradient slices out.

Each device sends its online stem's activations of two views of its small batch and its momentum
stem's activations of the same views. The server concatenates every device's batch ("vector
concatenation": many small device batches make one large batch for the trunk), runs its online and
momentum trunks and projectors, computes MoCo's InfoNCE against the feature queue, steps its
optimiser, updates its momentum trunk and the queue, and returns each device the gradient of the
loss with respect to that device's online activations.
[0] MocoSFL, Li et al., ICLR 2023
[1] MoCo v2, 2020, arXiv:2003.04297
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedssl.config import SplitConfig, SSLConfig, TrainConfig
from fedssl.models.heads import ProjectionHead
from fedssl.split.queue import FeatureQueue
from fedssl.ssl.base import MomentumTarget
from fedssl.train import build_optimizer

SHARED = -1  # the queue's key when every device shares one (split.feature-sharing)


@dataclass(frozen=True)
class DeviceActivations:
    """What one device sent for one step.

    Shape: online, momentum: (2 * batch, C, H, W), view a's images first, then view b's.
    """

    device: int
    online: Tensor
    momentum: Tensor

    @property
    def batch(self) -> int:
        return self.online.shape[0] // 2


@dataclass(frozen=True)
class StepResult:
    """The step's loss (mean over every device's images) and each device's gradient slice."""

    loss: float
    gradients: dict[int, Tensor]  # device -> d loss / d online activations, shaped like them
    images: int


def info_nce_sum(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE summed over the batch: positive ``k``, negatives the queue's keys.

    Shape: q, k: (batch, dim); queue: (queue_size, dim), unit rows -> scalar
    """
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ queue.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long), reduction="sum")


def check_activations(acts: DeviceActivations, shape: tuple[int, ...]) -> None:
    """Both tensors ``(2 * b, *shape)`` with ``b >= 1``, and finite.

    Raises:
        ValueError: naming the device and the problem.
    """
    for name, t in (("online", acts.online), ("momentum", acts.momentum)):
        if t.dim() != len(shape) + 1 or tuple(t.shape[1:]) != shape or t.shape[0] < 2 or t.shape[0] % 2:
            raise ValueError(f"device {acts.device}: {name} activations {tuple(t.shape)} are not (2*b, {shape})")
        if not torch.isfinite(t).all():
            raise ValueError(f"device {acts.device}: {name} activations hold NaN or Inf")
    if acts.online.shape != acts.momentum.shape:
        raise ValueError(f"device {acts.device}: online {tuple(acts.online.shape)} != momentum "
                         f"{tuple(acts.momentum.shape)}")


class SplitServer(nn.Module):
    """The trunk, its projector, their momentum copies, the optimiser and the feature queue(s)."""

    def __init__(self, trunk: nn.Module, ssl: SSLConfig, split: SplitConfig, train: TrainConfig,
                 seed: int = 0) -> None:
        super().__init__()
        self.trunk = trunk
        self.projector = ProjectionHead(trunk.ssl_dim, ssl.hidden_dim, ssl.proj_dim)
        self.target = MomentumTarget(self.trunk, self.projector)
        self.momentum = ssl.momentum
        self.temperature = ssl.temperature
        self.sharing = split.feature_sharing
        self.queue_size = split.queue_size
        self.proj_dim = ssl.proj_dim
        self._generator = torch.Generator().manual_seed(seed)
        self.queues: dict[int, FeatureQueue] = {}
        self.optimizer = build_optimizer([p for p in self.parameters() if p.requires_grad], train)

    def queue(self, device: int) -> FeatureQueue:
        """The queue ``device``'s queries are contrasted with (the shared one under feature sharing)."""
        key = SHARED if self.sharing else device
        if key not in self.queues:
            self.queues[key] = FeatureQueue(self.queue_size, self.proj_dim, self._generator)
        return self.queues[key]

    def step(self, batches: Sequence[DeviceActivations], lr: float) -> StepResult:
        """One optimiser step of the trunk over every device's batch, concatenated.

        The loss is symmetric (``q_a`` against ``k_b`` and ``q_b`` against ``k_a``), averaged over all
        ``2 * sum(b)`` queries, each against its own queue.
        Raises:
            ValueError: if ``batches`` is empty.
            FloatingPointError: if the loss is not finite (nothing is updated then).
        """
        if not batches:
            raise ValueError("a split step needs at least one device's activations")
        self.train()
        leaves = [b.online.detach().float().requires_grad_(True) for b in batches]
        sizes = [b.batch for b in batches]
        x = torch.cat([t[:n] for t, n in zip(leaves, sizes, strict=True)]
                      + [t[n:] for t, n in zip(leaves, sizes, strict=True)])  # (2 * sum(b), C, H, W)
        m = torch.cat([b.momentum.detach().float()[:n] for b, n in zip(batches, sizes, strict=True)]
                      + [b.momentum.detach().float()[n:] for b, n in zip(batches, sizes, strict=True)])
        q_a, q_b = self.projector(self.trunk.ssl_features(x)).chunk(2)  # (sum(b), proj_dim) each
        with torch.no_grad():
            k_a, k_b = self.target(m).chunk(2)
        total, start, keys = q_a.new_zeros(()), 0, []
        for batch, n in zip(batches, sizes, strict=True):
            sl = slice(start, start + n)
            queue = self.queue(batch.device).keys
            total = total + info_nce_sum(q_a[sl], k_b[sl], queue, self.temperature)
            total = total + info_nce_sum(q_b[sl], k_a[sl], queue, self.temperature)
            keys.append((batch.device, F.normalize(torch.cat([k_a[sl], k_b[sl]]), dim=1)))
            start += n
        loss = total / (2 * sum(sizes))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"split loss became {float(loss)}")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.target.update(nn.Sequential(self.trunk, self.projector), self.momentum)
            if self.sharing:
                self.queue(SHARED).enqueue(torch.cat([k for _, k in keys]))
            else:
                for device, k in keys:
                    self.queue(device).enqueue(k)
        grads = {b.device: leaf.grad for b, leaf in zip(batches, leaves, strict=True)}
        return StepResult(loss=float(loss.detach()), gradients=grads, images=sum(sizes))  # type: ignore[arg-type]

    @property
    def queue_fill(self) -> float:
        """Mean fill of the queues (0 before the first step)."""
        return sum(q.fill for q in self.queues.values()) / len(self.queues) if self.queues else 0.0

    def checkpoint(self) -> dict[str, Any]:
        """Everything a restarted ServerApp needs: trunks, projectors, optimiser, queues."""
        return {"modules": self.state_dict(), "optimizer": self.optimizer.state_dict(),
                "queues": {k: q.state_dict() for k, q in self.queues.items()},
                "generator": self._generator.get_state()}

    def restore(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["modules"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.queues = {int(k): FeatureQueue.from_state(q) for k, q in state["queues"].items()}
        self._generator.set_state(state["generator"])
