"""Backbones shared by every device and the server: a Jetson-sized CNN and ResNet-18.

Each maps images ``(batch, channels, size, size)`` to embeddings
``(batch, embedding_dim)``; only these weights travel in a federation.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from fedssl._torchvision import torchvision
from fedssl.config import ModelConfig
from fedssl.registry import Registry


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Four conv blocks (~0.4 M parameters): fast enough to train on a Jetson or a laptop CPU.

    ``readout`` is the layer the embedding is read from: ``pool`` is a linear map of the global
    average of the last feature map; ``spatial`` a linear map of the whole 3x3 map, which keeps
    where in the image a feature fires (what makes raw pixels strong on centred 28x28 images).
    """

    def __init__(self, in_channels: int = 1, embedding_dim: int = 128, width: int = 32,
                 readout: str = "pool") -> None:
        super().__init__()
        pooled = readout == "pool"
        self.features = nn.Sequential(
            _conv_block(in_channels, width),
            nn.MaxPool2d(2),  # 28 -> 14
            _conv_block(width, 2 * width),
            nn.MaxPool2d(2),  # 14 -> 7
            _conv_block(2 * width, 4 * width),
            nn.MaxPool2d(2),  # 7 -> 3
            _conv_block(4 * width, 8 * width),
            nn.AdaptiveAvgPool2d(1 if pooled else 3),  # a no-op on 28x28 input for "spatial"
            nn.Flatten(),
        )
        self.fc = nn.Linear(8 * width * (1 if pooled else 9), embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))  # (batch, embedding_dim)


class ResNet18Encoder(nn.Module):
    """torchvision ResNet-18; ``small_stem`` swaps the 7x7/stride-2 stem for a 3x3 one (CIFAR-style)."""

    def __init__(self, in_channels: int = 3, embedding_dim: int = 512, small_stem: bool = False) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        if small_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = nn.Identity() if embedding_dim == 512 else nn.Linear(512, embedding_dim)
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (batch, embedding_dim)


# builder(model config) -> backbone mapping (batch, channels, size, size) to (batch, embedding_dim)
EncoderBuilder = Callable[[ModelConfig], nn.Module]
ENCODERS: Registry[EncoderBuilder] = Registry("model.encoder")
ENCODERS.add("smallcnn", lambda cfg: SmallCNN(cfg.in_channels, cfg.embedding_dim, readout=cfg.readout))
ENCODERS.add("resnet18", lambda cfg: ResNet18Encoder(cfg.in_channels, cfg.embedding_dim, cfg.small_stem))


def build_encoder(cfg: ModelConfig) -> nn.Module:
    """Build the backbone named by ``cfg.encoder``.

    Raises:
        ValueError: for an unknown encoder name (the message lists ``ENCODERS``).
    """
    return ENCODERS.get(cfg.encoder)(cfg)
