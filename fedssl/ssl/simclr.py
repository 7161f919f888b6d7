"""SimCLR: contrast each view against every other image in the batch.

[0] SimCLR, 2020, arXiv:2002.05709
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedssl.models.heads import ProjectionHead
from fedssl.ssl.base import SSLModel


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross entropy over ``2N`` views.

    Shape: z_a, z_b: (batch_size, dim) -> scalar
    Raises:
        ValueError: if the temperature is not positive or the shapes differ.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        if z_a.shape != z_b.shape:
            raise ValueError(f"views differ in shape: {tuple(z_a.shape)} vs {tuple(z_b.shape)}")
        n = z_a.shape[0]
        z = F.normalize(torch.cat([z_a, z_b]), dim=1)  # (2n, dim)
        logits = z @ z.T / self.temperature  # (2n, 2n)
        logits.fill_diagonal_(float("-inf"))  # a view is not its own positive
        targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(logits, targets)


class SimCLR(SSLModel):
    def __init__(self, backbone: nn.Module, embedding_dim: int, hidden_dim: int, proj_dim: int,
                 temperature: float) -> None:
        super().__init__(backbone)
        self.projector = ProjectionHead(embedding_dim, hidden_dim, proj_dim)
        self.criterion = NTXentLoss(temperature)

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        z = self.projector(self.features(torch.cat([view_a, view_b])))  # one BN batch for both views
        z_a, z_b = z.chunk(2)
        return self.criterion(z_a, z_b)
