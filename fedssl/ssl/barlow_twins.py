"""Barlow Twins: make the cross-correlation of the two views' projections the identity.

[0] Barlow Twins, 2021, arXiv:2103.03230
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedssl.models.heads import ProjectionHead
from fedssl.ssl.base import SSLModel


class BarlowTwinsLoss(nn.Module):
    """``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2`` with ``C`` the batch cross-correlation.

    Shape: z_a, z_b: (batch_size, dim) -> scalar
    Raises:
        ValueError: if the batch has fewer than 2 samples (no correlation to estimate).
    """

    def __init__(self, lambda_offdiag: float = 0.005) -> None:
        super().__init__()
        self.lambda_offdiag = lambda_offdiag

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        n = z_a.shape[0]
        if n < 2:
            raise ValueError(f"Barlow Twins needs a batch of at least 2, got {n}")
        z_a = (z_a - z_a.mean(0)) / (z_a.std(0) + 1e-5)
        z_b = (z_b - z_b.mean(0)) / (z_b.std(0) + 1e-5)
        c = z_a.T @ z_b / n  # (dim, dim)
        on_diag = (torch.diagonal(c) - 1).pow(2).sum()
        off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on_diag + self.lambda_offdiag * off_diag


class BarlowTwins(SSLModel):
    def __init__(self, backbone: nn.Module, embedding_dim: int, hidden_dim: int, proj_dim: int,
                 lambda_offdiag: float) -> None:
        super().__init__(backbone)
        self.projector = ProjectionHead(embedding_dim, hidden_dim, proj_dim)
        self.criterion = BarlowTwinsLoss(lambda_offdiag)

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        z_a, z_b = self.projector(self.features(torch.cat([view_a, view_b]))).chunk(2)
        return self.criterion(z_a, z_b)
