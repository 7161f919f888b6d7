"""Catch-the-Patch, reduced: track a pasted patch (the FedVSSL paper's own pretext task, CtP [0]).

Into every clip of the batch a square patch (a piece of another clip's first frame, mixed with
noise, ``size // 4`` pixels wide) is pasted on every frame, moving along a random straight path
at constant speed. A head on the backbone's embedding regresses the path's start and end points,
from which the per-frame patch centres follow; the loss is the mean squared error of the
per-frame centres in normalised coordinates ([-1, 1]). CtP's full version also varies the
patch's size and rotation along the path and regresses whole boxes; a straight path keeps the
head a small MLP on the pooled embedding.

[0] CtP: Unsupervised visual representation learning by tracking patches in video, 2021, arXiv:2105.02545
[1] FedVSSL, 2022, arXiv:2207.01975
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedssl.models.heads import MLPHead
from fedssl.ssl.base import SSLModel


def paste_moving_patch(clips: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Paste one patch per clip moving linearly from a random start to a random end.

    Shape: (batch, T, H, W) in [0, 1] -> ((batch, T, H, W), (batch, T, 2) patch centres (x, y) in [-1, 1])
    Raises:
        ValueError: if frames are smaller than 8x8.
    """
    b, t, h, w = clips.shape
    if min(h, w) < 8:
        raise ValueError(f"frames of {h}x{w} are too small for a patch (need >= 8x8)")
    p = max(4, min(h, w) // 4)
    device = clips.device
    # the patch: a random piece of another clip's first frame, half noise so it is never blank
    top = torch.randint(0, h - p + 1, (b,), generator=generator)
    left = torch.randint(0, w - p + 1, (b,), generator=generator)
    rows, cols = top[:, None] + torch.arange(p), left[:, None] + torch.arange(p)
    source = clips.roll(1, dims=0)[:, 0].cpu()
    patch = source[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (batch, p, p)
    patch = 0.5 * patch + 0.5 * torch.rand(b, p, p, generator=generator)
    # its path: top-left corners moving at constant speed, start and end anywhere the patch fits
    limit = torch.tensor([w - p, h - p], dtype=torch.float32)
    ends = torch.rand(b, 2, 2, generator=generator) * limit  # (batch, start/end, x/y)
    frac = torch.linspace(0, 1, t)[None, :, None]
    corner = (ends[:, :1] + (ends[:, 1:] - ends[:, :1]) * frac).round()  # (batch, T, 2) integer pixels
    u = torch.arange(h).view(1, 1, h, 1) - corner[..., 1].view(b, t, 1, 1)  # row inside the patch
    v = torch.arange(w).view(1, 1, 1, w) - corner[..., 0].view(b, t, 1, 1)
    inside = (u >= 0) & (u < p) & (v >= 0) & (v < p)  # (batch, T, H, W)
    flat = (u.clamp(0, p - 1) * p + v.clamp(0, p - 1)).long().view(b, t, h * w)
    values = torch.gather(patch.view(b, 1, p * p).expand(-1, t, -1), 2, flat).view(b, t, h, w)
    out = torch.where(inside.to(device), values.to(device, clips.dtype), clips)
    centre = (corner + p / 2) / torch.tensor([w, h]) * 2 - 1  # normalised, as affine_grid counts
    return out, centre.to(device)


def centres_from_path(path: Tensor, frames: int) -> Tensor:
    """Per-frame centres of a straight path. Shape: (batch, 4) start (x, y), end (x, y) -> (batch, frames, 2)"""
    start, end = path[:, None, :2], path[:, None, 2:]
    return start + (end - start) * torch.linspace(0, 1, frames, device=path.device)[None, :, None]


class CatchThePatchLoss(nn.Module):
    """Mean squared error of per-frame centres; about 0.33 for a constant guess of 0, 0 when exact."""

    def forward(self, path: Tensor, centres: Tensor) -> Tensor:
        return F.mse_loss(centres_from_path(path, centres.shape[1]), centres)


class CatchThePatch(SSLModel):
    def __init__(self, backbone: nn.Module, embedding_dim: int, hidden_dim: int) -> None:
        super().__init__(backbone)
        self.regressor = MLPHead(embedding_dim, hidden_dim, 4)
        self.criterion = CatchThePatchLoss()

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        x, centres = paste_moving_patch(torch.cat([view_a, view_b]))
        return self.criterion(self.regressor(self.features(x)), centres)
