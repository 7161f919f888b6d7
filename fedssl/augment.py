"""Two-view augmentations (torchvision ``transforms.v2``) for small grey and RGB images.

For 28x28 grey images colour jitter is meaningless and big crops destroy the
object, so the grey pipeline uses moderate crops, flips, small affine moves,
brightness/contrast and random erasing; RGB adds colour jitter and greyscale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from fedssl._torchvision import transforms_v2 as T


def normalize_transform(mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """uint8 ``(C, H, W)`` -> normalised float, the exact preprocessing export reproduces."""
    return T.Compose([T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))])


def ssl_augmentation(size: int, channels: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """One random view of a uint8 image tensor ``(C, H, W)``."""
    geometric = [
        T.RandomResizedCrop(size, scale=(0.35, 1.0), ratio=(0.75, 1.33), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.RandomAffine(degrees=10, translate=(0.1, 0.1))], p=0.5),
    ]
    photometric: list[T.Transform] = [T.RandomApply([T.ColorJitter(0.4, 0.4)], p=0.8)]
    if channels == 3:
        photometric = [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)]
    return T.Compose([
        *geometric,
        *photometric,
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(list(mean), list(std)),
        T.RandomErasing(p=0.25, scale=(0.02, 0.15)),
    ])


class TwoViewDataset(Dataset):
    """Yields two independent augmentations of each unlabeled image."""

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
