"""Collapse check of embeddings: is the encoder still spreading images apart?

[0] Understanding Dimensional Collapse, 2022, arXiv:2110.09348
[1] RankMe, 2023, arXiv:2210.02885
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_rank(z: Tensor) -> None:
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"expected embeddings of shape (batch >= 2, dim), got {tuple(z.shape)}")


@torch.no_grad()
def z_std(z: Tensor) -> float:
    """Mean per-dimension std of L2-normalised embeddings, times ``sqrt(dim)``.

    1.0 for healthy isotropic embeddings, 0.0 for complete collapse (all alike).
    Shape: (batch, dim)
    """
    _check_rank(z)
    if not torch.isfinite(z).all():
        return float("nan")  # a broken encoder: the server rejects non-finite metrics
    return float(F.normalize(z.float(), dim=1).std(dim=0).mean() * math.sqrt(z.shape[1]))


@torch.no_grad()
def rankme(z: Tensor, eps: float = 1e-7) -> float:
    """Effective rank: ``exp`` of the entropy of the normalised singular values.

    Between 1 (everything on a line) and ``min(batch, dim)`` (full rank).
    Shape: (batch, dim)
    """
    _check_rank(z)
    if not torch.isfinite(z).all():
        return float("nan")
    s = torch.linalg.svdvals(z.float())
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))
