"""Two-view SSL augmentations for small grey and RGB images.

Two pipelines, chosen by ``train.augmentation``:

- ``batched`` (default): every image of a uint8 batch gets its own random resized crop,
  flip and rotation in one ``affine_grid``/``grid_sample`` call, then brightness/contrast
  (and for RGB saturation and greyscale) jitter as tensor maths. About 30x cheaper than
  per-sample transforms on 28x28 images, which buys optimiser steps on a device's CPU.
- ``per-sample``: torchvision ``transforms.v2`` applied image by image in a ``Dataset``
  (the original pipeline, kept for comparison in the quality benchmark).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from fedssl._torchvision import transforms_v2 as T

AUGMENTATIONS = ("batched", "per-sample")


def normalize_transform(mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """uint8 ``(C, H, W)`` -> normalised float, the exact preprocessing export reproduces."""
    return T.Compose([T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))])


@dataclass(frozen=True)
class AugmentationParams:
    """Ranges shared by both pipelines."""

    crop_scale: tuple[float, float] = (0.35, 1.0)  # fraction of the image area a crop keeps
    crop_ratio: tuple[float, float] = (0.75, 1.33)
    degrees: float = 10.0
    flip_p: float = 0.5
    jitter: float = 0.4  # brightness and contrast factors drawn from [1 - jitter, 1 + jitter]
    jitter_p: float = 0.8
    erase_p: float = 0.25
    erase_scale: tuple[float, float] = (0.02, 0.15)


class BatchAugment:
    """One random view of every image of a batch, each image with its own parameters.

    Shape: uint8 (batch, C, H, W) -> float32 (batch, C, H, W), normalised with ``mean``/``std``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float],
                 params: AugmentationParams = AugmentationParams()) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.p = params

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        x = images.float().div_(255)
        x = self._geometric(x, generator)
        x = self._photometric(x, generator)
        x = (x - self.mean) / self.std
        return self._erase(x, generator) if self.p.erase_p else x

    def _geometric(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Random resized crop + horizontal flip + rotation as one affine warp per image."""
        b = x.shape[0]
        area = _uniform(b, *self.p.crop_scale, gen)
        ratio = _uniform(b, math.log(self.p.crop_ratio[0]), math.log(self.p.crop_ratio[1]), gen).exp()
        w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)  # crop size / image
        cx, cy = _uniform(b, -1, 1, gen) * (1 - w), _uniform(b, -1, 1, gen) * (1 - h)  # crop centre in [-1, 1]
        angle = _uniform(b, -self.p.degrees, self.p.degrees, gen) * (math.pi / 180)
        flip = torch.where(torch.rand(b, generator=gen) < self.p.flip_p, -1.0, 1.0)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([w * cos * flip, -h * sin, cx], 1),
                             torch.stack([w * sin * flip, h * cos, cy], 1)], 1)  # (batch, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _photometric(self, x: Tensor, gen: torch.Generator) -> Tensor:
        b, c = x.shape[:2]
        if not self.p.jitter:
            return x
        on = (torch.rand(b, 1, 1, 1, generator=gen) < self.p.jitter_p).float()
        brightness = 1 + on * _uniform(b, -self.p.jitter, self.p.jitter, gen).view(b, 1, 1, 1)
        contrast = 1 + on * _uniform(b, -self.p.jitter, self.p.jitter, gen).view(b, 1, 1, 1)
        x = x * brightness
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey.mean(dim=(2, 3), keepdim=True)) * contrast + grey.mean(dim=(2, 3), keepdim=True)
        if c == 3:
            saturation = 1 + on * _uniform(b, -self.p.jitter, self.p.jitter, gen).view(b, 1, 1, 1)
            x = grey + (x - grey) * saturation
            to_grey = (torch.rand(b, 1, 1, 1, generator=gen) < 0.2).float()
            x = to_grey * x.mean(dim=1, keepdim=True).expand_as(x) + (1 - to_grey) * x
        return x.clamp_(0, 1)

    def _erase(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """Random erasing: a square of 2-15 % of the image set to 0 (the normalised mean)."""
        b, _, height, width = x.shape
        on = torch.rand(b, generator=gen) < self.p.erase_p
        area = _uniform(b, *self.p.erase_scale, gen) * height * width
        side = area.sqrt().round().long().clamp(1, min(height, width))
        y0 = (torch.rand(b, generator=gen) * (height - side + 1)).long()
        x0 = (torch.rand(b, generator=gen) * (width - side + 1)).long()
        ys = torch.arange(height).view(1, -1, 1)
        xs = torch.arange(width).view(1, 1, -1)
        inside = ((ys >= y0.view(-1, 1, 1)) & (ys < (y0 + side).view(-1, 1, 1))
                  & (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + side).view(-1, 1, 1)) & on.view(-1, 1, 1))
        return x.masked_fill(inside.unsqueeze(1), 0.0)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def ssl_augmentation(size: int, channels: int, mean: Sequence[float], std: Sequence[float],
                     params: AugmentationParams = AugmentationParams()) -> T.Compose:
    """One random view of a uint8 image tensor ``(C, H, W)`` (the ``per-sample`` pipeline)."""
    geometric = [
        T.RandomResizedCrop(size, scale=params.crop_scale, ratio=params.crop_ratio, antialias=True),
        T.RandomHorizontalFlip(params.flip_p),
        T.RandomApply([T.RandomAffine(degrees=params.degrees, translate=(0.1, 0.1))], p=0.5),
    ]
    photometric: list[T.Transform] = [T.RandomApply([T.ColorJitter(params.jitter, params.jitter)], p=params.jitter_p)]
    if channels == 3:
        photometric = [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)]
    return T.Compose([
        *geometric,
        *photometric,
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(list(mean), list(std)),
        T.RandomErasing(p=params.erase_p, scale=params.erase_scale),
    ])


class TwoViewDataset(Dataset):
    """Yields two independent augmentations of each unlabeled image (the ``per-sample`` pipeline)."""

    def __init__(self, images: np.ndarray, transform: T.Compose) -> None:
        self.images = torch.from_numpy(np.array(images, dtype=np.uint8))  # (N, C, H, W), an own writable copy
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image = self.images[i]
        return self.transform(image), self.transform(image)


def normalization(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std): Fashion-MNIST's for grey models, a neutral 0.5 for RGB ones."""
    from fedssl.data.fashion_mnist import MEAN, STD

    return (MEAN, STD) if channels == 1 else ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
