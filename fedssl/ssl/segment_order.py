"""Segment-order prediction: a predictive pretext task (which permutation shuffled the segments?).

A view is cut into ``k`` equal segments along its last axis (time for a waveform, width for an
image), the segments are shuffled by one of the ``k!`` permutations, and a classifier on the
backbone's features names the permutation: the audio counterpart of video clip-order
prediction [0], one of the predictive methods FASSL compares with feature matching [1].

[0] Clip order prediction (VCOP), 2019, CVPR, Xu et al.
[1] FASSL, 2024, arXiv:2402.02889
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedssl.models.heads import MLPHead
from fedssl.ssl.base import SSLModel


def permutations(k: int) -> Tensor:
    """All ``k!`` orders of ``k`` segments, the identity first. Shape: (k!, k)"""
    return torch.tensor(list(itertools.permutations(range(k))), dtype=torch.long)


def shuffle_segments(x: Tensor, k: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Shuffle ``k`` equal segments of each sample's last axis by a random permutation per sample.

    A remainder of ``length % k`` positions stays in place at the end.
    Shape: (batch, ..., length) -> ((batch, ..., length), (batch,) permutation index in 0..k!-1)
    Raises:
        ValueError: if the last axis is shorter than ``k``.
    """
    length = x.shape[-1]
    if length < k:
        raise ValueError(f"cannot cut {length} positions into {k} segments")
    orders = permutations(k)
    labels = torch.randint(0, len(orders), (x.shape[0],), generator=generator)
    seg = length // k
    # source position of every output position: segment orders[label][j] fills slot j
    src = (orders[labels].unsqueeze(-1) * seg + torch.arange(seg)).flatten(1)  # (batch, k * seg)
    src = torch.cat([src, torch.arange(k * seg, length).expand(x.shape[0], -1)], 1)  # (batch, length)
    index = src.view(x.shape[0], *([1] * (x.dim() - 2)), length).expand_as(x).to(x.device)
    return torch.gather(x, -1, index), labels.to(x.device)


class SegmentOrderLoss(nn.Module):
    """Cross entropy of the predicted permutation; ``log k!`` at chance, 0 when always right."""

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits, labels)


class SegmentOrderPrediction(SSLModel):
    def __init__(self, backbone: nn.Module, embedding_dim: int, hidden_dim: int, segments: int = 3) -> None:
        super().__init__(backbone)
        self.segments = segments
        self.classifier = MLPHead(embedding_dim, hidden_dim, len(permutations(segments)))
        self.criterion = SegmentOrderLoss()

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        x, labels = shuffle_segments(torch.cat([view_a, view_b]), self.segments)
        return self.criterion(self.classifier(self.features(x)), labels)
