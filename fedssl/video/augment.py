"""Two random views of every clip of a batch, in torch, for video SSL: temporally consistent augmentation.

A view is a window of ``crop-frames`` consecutive frames at a random offset (the two views of a
clip start at different frames), then one random spatial crop, resized back, and one brightness
and contrast change applied alike to every frame of the window: what changes between frames is
the motion, never the augmentation [0]. All clips of a batch in one ``grid_sample`` call (frames
as channels, so each clip's crop is shared by its frames).

No horizontal flip or time reversal by default: both map one motion label onto another (left onto
right, clockwise onto counter-clockwise), and invariance to them would erase what the motion probe
measures.

[0] Spatiotemporal contrastive video representation learning (CVRL), 2021, arXiv:2008.03800
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class VideoAugmentParams:
    crop_frames: int = 8  # 0: keep every frame (pretext tasks that pick frames themselves)
    crop_scale: tuple[float, float] = (0.5, 1.0)  # area of the spatial crop
    brightness: float = 0.3
    contrast: float = 0.3
    flip_p: float = 0.0  # horizontal flip (the same for all frames of a view)


def temporal_crops(clips: Tensor, length: int, generator: torch.Generator) -> Tensor:
    """``length`` consecutive frames at a random offset in each clip.

    Shape: (batch, frames, H, W) -> (batch, length, H, W)
    Raises:
        ValueError: if the clips have fewer than ``length`` frames.
    """
    b, t = clips.shape[:2]
    if t < length:
        raise ValueError(f"clips of {t} frames are shorter than the window of {length}")
    start = (torch.rand(b, generator=generator) * (t - length + 1)).long()  # (batch,)
    index = (start[:, None] + torch.arange(length)[None]).view(b, length, 1, 1).expand(-1, -1, *clips.shape[2:])
    return torch.gather(clips, 1, index)


def centre_crops(clips: np.ndarray, length: int) -> np.ndarray:
    """The middle ``length`` frames of each clip (evaluation and export). Shape: (N, T, H, W) -> (N, length, H, W)"""
    start = (clips.shape[1] - length) // 2
    return np.ascontiguousarray(clips[:, start:start + length])


def spatial_crops(clips: Tensor, params: VideoAugmentParams, generator: torch.Generator) -> Tensor:
    """One random crop (and maybe flip) per clip, the same on all its frames, resized to the input size.

    Shape: (batch, frames, H, W) float -> (batch, frames, H, W)
    """
    b = clips.shape[0]
    low, high = params.crop_scale
    side = (low + torch.rand(b, generator=generator) * (high - low)).sqrt()  # side of the crop / side of the frame
    shift = (torch.rand(b, 2, generator=generator) * 2 - 1) * (1 - side)[:, None]  # keeps the crop inside
    flip = torch.where(torch.rand(b, generator=generator) < params.flip_p, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = side * flip, side
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(clips.shape), align_corners=False)
    return F.grid_sample(clips, grid, mode="bilinear", padding_mode="border", align_corners=False)


class VideoAugment:
    """One random view of every clip.

    Shape: uint8 (batch, frames, H, W) -> float (batch, crop_frames, H, W) in [0, 1]
    """

    def __init__(self, params: VideoAugmentParams = VideoAugmentParams()) -> None:
        self.p = params

    def __call__(self, clips: Tensor, generator: torch.Generator) -> Tensor:
        x = temporal_crops(clips, self.p.crop_frames, generator) if self.p.crop_frames else clips
        x = spatial_crops(x.float() / 255.0, self.p, generator)
        b = x.shape[0]
        gain = 1 + (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * self.p.contrast
        offset = (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * self.p.brightness * 0.5
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - mean) * gain + mean + offset).clamp(0, 1)


def video_view_batches(clips: np.ndarray, batch_size: int, seed: int,
                       params: VideoAugmentParams) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless ``(view_a, view_b)`` clip batches, epoch after epoch (``train_local``'s ``views``)."""
    generator = torch.Generator().manual_seed(seed)
    augment = VideoAugment(params)
    data = torch.from_numpy(np.array(clips, dtype=np.uint8))  # (N, T, H, W), an own writable copy
    while True:
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data) - batch_size + 1, batch_size):
            batch = data[order[start:start + batch_size]]
            yield augment(batch, generator), augment(batch, generator)
