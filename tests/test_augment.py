"""Batched two-view augmentation: every image gets its own view, and no-op parameters change nothing."""

import numpy as np
import pytest
import torch

from fedssl.augment import AugmentationParams, BatchAugment, normalization
from fedssl.data.fashion_mnist import load_fashion_mnist

IDENTITY = AugmentationParams(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), degrees=0.0, flip_p=0.0, jitter=0.0,
                              erase_p=0.0)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    x, _ = load_fashion_mnist("test")
    return torch.from_numpy(np.array(x[:64]))


def test_no_op_parameters_give_the_normalised_image(images):
    mean, std = normalization(1)
    out = BatchAugment(mean, std, IDENTITY)(images, torch.Generator().manual_seed(0))
    expected = (images.float() / 255 - mean[0]) / std[0]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_a_full_horizontal_flip_mirrors_the_image(images):
    mean, std = normalization(1)
    flip = AugmentationParams(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), degrees=0.0, flip_p=1.0, jitter=0.0,
                              erase_p=0.0)
    out = BatchAugment(mean, std, flip)(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, ((images.float() / 255 - mean[0]) / std[0]).flip(-1), atol=1e-5, rtol=0)


def test_each_image_gets_its_own_view_and_the_seed_fixes_them(images):
    mean, std = normalization(1)
    augment = BatchAugment(mean, std)
    same = images[:1].expand(16, -1, -1, -1).contiguous()  # one image, sixteen times
    views = augment(same, torch.Generator().manual_seed(1))
    assert views.shape == (16, 1, 28, 28) and views.dtype == torch.float32
    distinct = {tuple(v.flatten()[::7].round(decimals=3).tolist()) for v in views}
    assert len(distinct) == 16  # per-sample parameters, not one transform for the batch
    torch.testing.assert_close(augment(same, torch.Generator().manual_seed(1)), views)


def test_rgb_views_stay_in_the_normalised_range(images):
    mean, std = normalization(3)
    rgb = images.expand(-1, 3, -1, -1).contiguous()
    out = BatchAugment(mean, std)(rgb, torch.Generator().manual_seed(0))
    low, high = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    assert out.shape == rgb.shape and out.min() >= low - 1e-5 and out.max() <= high + 1e-5
