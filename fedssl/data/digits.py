"""An out-of-domain probe: scikit-learn's 8x8 handwritten digits, upsampled to our input size."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=2)
def load_digits_images(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(1797, 1, size, size)`` uint8 (white on black, like Fashion-MNIST) and labels."""
    from sklearn.datasets import load_digits  # ships with scikit-learn, no download

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    x = F.pad(x, (2, 2, 2, 2))  # a dark margin around the object, as in Fashion-MNIST and MNIST
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return images, digits.target.astype(np.int64)
