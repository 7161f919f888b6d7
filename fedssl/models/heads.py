"""MLP heads for SSL objectives; they stay on the device and never travel.

[0] SimCLR, 2020, arXiv:2002.05709 (projection head)
[1] BYOL, 2020, arXiv:2006.07733 (predictor)
"""

from __future__ import annotations

from torch import Tensor, nn


class MLPHead(nn.Module):
    """``Linear -> BN -> ReLU -> Linear``, optionally with a final BN (Barlow Twins, SimSiam).

    Shape: (batch, in_dim) -> (batch, out_dim)
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, last_bn: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=not last_bn),
        ]
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ProjectionHead(MLPHead):
    """Maps backbone embeddings to the space where the SSL loss is computed."""


class PredictorHead(MLPHead):
    """Predicts the target branch's projection from the online one (BYOL, SimSiam)."""
