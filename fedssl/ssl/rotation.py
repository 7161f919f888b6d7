"""Rotation prediction: a predictive pretext task (which of 0/90/180/270 degrees?).

[0] RotNet, 2018, arXiv:1803.07728
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedssl.models.heads import MLPHead
from fedssl.ssl.base import SSLModel


def rotate_batch(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Rotate each image by a random multiple of 90 degrees.

    Shape: (batch, channels, h, w) -> ((batch, channels, h, w), (batch,) labels in 0..3)
    """
    labels = torch.randint(0, 4, (x.shape[0],), generator=generator)
    rotated = torch.stack([torch.rot90(img, int(k), dims=(1, 2)) for img, k in zip(x, labels)])
    return rotated, labels.to(x.device)


class RotationLoss(nn.Module):
    """Cross entropy of the predicted rotation; ``log 4`` at chance, 0 when always right."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels)


class RotationPrediction(SSLModel):
    def __init__(self, backbone: nn.Module, embedding_dim: int, hidden_dim: int) -> None:
        super().__init__(backbone)
        self.classifier = MLPHead(embedding_dim, hidden_dim, 4)
        self.criterion = RotationLoss()

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        x, labels = rotate_batch(torch.cat([view_a, view_b]))
        return self.criterion(self.classifier(self.features(x)), labels)
