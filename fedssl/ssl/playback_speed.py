"""Playback-speed prediction: a temporal pretext task (was this window played at 1x or 2x?).

Each clip of the batch gives one window of ``frames // 2`` frames, taken either from consecutive
frames (1x) or from every second frame (2x) at a random offset; a classifier on the backbone's
embedding names the speed. Speed cannot be read from one frame, so the encoder must model motion.
The views are full-length clips (spatially augmented, not cut in time): the model picks the frames.

[0] SpeedNet, 2020, arXiv:2004.06130; [1] Video playback rate perception (PRP), 2020, arXiv:2006.11476
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedssl.models.heads import MLPHead
from fedssl.ssl.base import SSLModel

SPEEDS = (1, 2)


def speed_windows(clips: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """A window of ``T // 2`` frames per clip at a random speed from :data:`SPEEDS` and a random offset.

    Shape: (batch, T, H, W) -> ((batch, T // 2, H, W), (batch,) index into SPEEDS)
    Raises:
        ValueError: if a clip has fewer than 4 frames.
    """
    b, t = clips.shape[:2]
    length = t // 2
    if length < 2:
        raise ValueError(f"clips of {t} frames are too short for playback-speed windows (need >= 4)")
    labels = torch.randint(0, len(SPEEDS), (b,), generator=generator)
    step = torch.tensor(SPEEDS)[labels]  # (batch,)
    span = step * (length - 1) + 1  # frames a window covers
    start = (torch.rand(b, generator=generator) * (t - span + 1)).long()
    index = start[:, None] + step[:, None] * torch.arange(length)[None]  # (batch, length)
    index = index.to(clips.device).view(b, length, 1, 1).expand(-1, -1, *clips.shape[2:])
    return torch.gather(clips, 1, index), labels.to(clips.device)


class PlaybackSpeedLoss(nn.Module):
    """Cross entropy of the predicted speed; ``log 2`` at chance, 0 when always right."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels)


class PlaybackSpeedPrediction(SSLModel):
    def __init__(self, backbone: nn.Module, embedding_dim: int, hidden_dim: int) -> None:
        super().__init__(backbone)
        self.classifier = MLPHead(embedding_dim, hidden_dim, len(SPEEDS))
        self.criterion = PlaybackSpeedLoss()

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        x, labels = speed_windows(torch.cat([view_a, view_b]))
        return self.criterion(self.classifier(self.features(x)), labels)
