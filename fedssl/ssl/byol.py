"""BYOL: predict an EMA target's projection of the other view; no negatives.

[0] BYOL, 2020, arXiv:2006.07733
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedssl.models.heads import PredictorHead, ProjectionHead
from fedssl.ssl.base import MomentumTarget, SSLModel


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """``2 - 2 cos(p, z)`` averaged over the batch; 0 when aligned, 4 when opposite.

    Shape: p, z: (batch_size, dim) -> scalar
    """
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


class BYOLLoss(nn.Module):
    """Symmetrised BYOL regression loss between online predictions and target projections."""

    def forward(self, p_a: Tensor, p_b: Tensor, t_a: Tensor, t_b: Tensor) -> Tensor:
        return 0.5 * (negative_cosine(p_a, t_b) + negative_cosine(p_b, t_a))


class BYOL(SSLModel):
    def __init__(self, backbone: nn.Module, embedding_dim: int, hidden_dim: int, proj_dim: int,
                 momentum: float) -> None:
        super().__init__(backbone)
        self.projector = ProjectionHead(embedding_dim, hidden_dim, proj_dim)
        self.predictor = PredictorHead(proj_dim, hidden_dim, proj_dim)
        self.target = MomentumTarget(self.backbone, self.projector)
        self.momentum = momentum
        self.criterion = BYOLLoss()

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        p_a, p_b = self.predictor(self.projector(self.features(torch.cat([view_a, view_b])))).chunk(2)
        with torch.no_grad():
            t_a, t_b = self.target(torch.cat([view_a, view_b])).chunk(2)
        return self.criterion(p_a, p_b, t_a, t_b)

    @torch.no_grad()
    def after_step(self) -> None:
        self.target.update(nn.Sequential(self.backbone, self.projector), self.momentum)
