"""SimSiam: BYOL without the EMA target; stop-gradient alone prevents collapse.

[0] SimSiam, 2021, arXiv:2011.10566
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedssl.models.heads import PredictorHead, ProjectionHead
from fedssl.ssl.base import SSLModel
from fedssl.ssl.byol import negative_cosine


class SimSiamLoss(nn.Module):
    """Symmetrised negative cosine with stop-gradient on the projections (range 0..4)."""

    def forward(self, p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor) -> Tensor:
        return 0.5 * (negative_cosine(p_a, z_b) + negative_cosine(p_b, z_a))


class SimSiam(SSLModel):
    def __init__(self, backbone: nn.Module, embedding_dim: int, hidden_dim: int, proj_dim: int) -> None:
        super().__init__(backbone)
        self.projector = ProjectionHead(embedding_dim, hidden_dim, proj_dim, last_bn=True)
        self.predictor = PredictorHead(proj_dim, hidden_dim // 4 or 1, proj_dim)
        self.criterion = SimSiamLoss()

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        z = self.projector(self.features(torch.cat([view_a, view_b])))
        p_a, p_b = self.predictor(z).chunk(2)
        z_a, z_b = z.chunk(2)
        return self.criterion(p_a, p_b, z_a, z_b)
