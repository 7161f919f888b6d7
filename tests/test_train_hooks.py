"""train_local's hooks for benchmarks and experiments: they observe or replace one part, nothing is patched."""

from __future__ import annotations

import numpy as np
import torch

from fedssl.config import ModelConfig, SSLConfig, TrainConfig
from fedssl.data.fashion_mnist import load_fashion_mnist
from fedssl.ssl import build_ssl_model
from fedssl.train import train_local

IMAGES = load_fashion_mnist("train")[0][:96]


def test_on_step_sees_every_step_and_the_loss_the_result_averages():
    torch.manual_seed(0)
    model = build_ssl_model(SSLConfig(), ModelConfig())
    seen: list[tuple[int, float]] = []
    result = train_local(model, IMAGES, ModelConfig(), TrainConfig(batch_size=32), seed=0,
                         on_step=lambda step, loss: seen.append((step, loss)))
    assert [s for s, _ in seen] == [0, 1, 2] == list(range(result.steps))
    assert np.mean([loss for _, loss in seen]) == result.loss


def test_transform_replaces_the_augmentation():
    calls = []

    def identity_view(image: torch.Tensor) -> torch.Tensor:  # no augmentation: both views are the image
        calls.append(image.shape)
        return image.float() / 255

    torch.manual_seed(0)
    model = build_ssl_model(SSLConfig(), ModelConfig())
    result = train_local(model, IMAGES, ModelConfig(), TrainConfig(batch_size=32, augmentation="batched"), seed=0,
                         transform=identity_view)
    assert result.steps == 3 and len(calls) >= 2 * 3 * 32 and calls[0] == (1, 28, 28)
