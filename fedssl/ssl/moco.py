"""MoCo v2: contrast queries against a momentum key encoder and a local queue of keys.

The queue lives on the device (never sent), as in the local-memory variant of
federated MoCo; MocoSFL shares it at the server instead.
[0] MoCo v2, 2020, arXiv:2003.04297
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedssl.models.heads import ProjectionHead
from fedssl.ssl.base import MomentumTarget, SSLModel


class MoCoLoss(nn.Module):
    """InfoNCE with one positive key and the queue's keys as negatives.

    Shape: q, k: (batch_size, dim); queue: (queue_size, dim) -> scalar
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        positives = (q * k).sum(dim=1, keepdim=True)  # (batch, 1)
        negatives = q @ queue.T  # (batch, queue_size)
        logits = torch.cat([positives, negatives], dim=1) / self.temperature
        return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class MoCo(SSLModel):
    device_only_buffers = ("queue", "queue_ptr")

    def __init__(self, backbone: nn.Module, embedding_dim: int, hidden_dim: int, proj_dim: int,
                 temperature: float, momentum: float, queue_size: int) -> None:
        super().__init__(backbone)
        self.projector = ProjectionHead(embedding_dim, hidden_dim, proj_dim)
        self.target = MomentumTarget(self.backbone, self.projector)
        self.momentum = momentum
        self.criterion = MoCoLoss(temperature)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self._pending_keys: Tensor | None = None

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        q_a, q_b = self.projector(self.features(torch.cat([view_a, view_b]))).chunk(2)
        with torch.no_grad():
            k_a, k_b = self.target(torch.cat([view_a, view_b])).chunk(2)
        loss = 0.5 * (self.criterion(q_a, k_b, self.queue) + self.criterion(q_b, k_a, self.queue))
        self._pending_keys = F.normalize(torch.cat([k_a, k_b]), dim=1)
        return loss

    @torch.no_grad()
    def after_step(self) -> None:
        self.target.update(nn.Sequential(self.backbone, self.projector), self.momentum)
        if self._pending_keys is not None:
            self._enqueue(self._pending_keys)
            self._pending_keys = None

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        size = self.queue.shape[0]
        keys = keys[:size]
        idx = (int(self.queue_ptr) + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[idx] = keys
        self.queue_ptr.fill_((int(self.queue_ptr) + keys.shape[0]) % size)
