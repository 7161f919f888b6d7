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


class Encoder(nn.Module):
    """A backbone: ``forward`` gives the embedding devices retrieve with (and export ships).

    ``ssl_features`` is what the SSL heads are trained on; by default the embedding itself.
    An encoder may read its embedding from an earlier layer than the one its SSL heads sit
    on (``SmallCNN(readout="block3")``): the layers in between act as part of the head
    during training and keep the embedding from specialising to the SSL task [0].
    [0] Guillotine Regularization, 2022, arXiv:2206.13378
    """

    ssl_dim: int

    def ssl_features(self, x: Tensor) -> Tensor:
        return self(x)


class SmallCNN(Encoder):
    """Four conv blocks (~0.4 M parameters): fast enough to train on a Jetson or a laptop CPU.

    ``readout`` chooses the embedding:
      - ``pool``: ``fc`` of the global average of block 4 (``embedding_dim`` wide);
      - ``block3``: block 3's max-pooled feature map, flattened and standardised per dimension
        (a ``BatchNorm1d`` without affine weights; ``4 * width * (size // 8) ** 2`` wide, 1152 for
        28x28 input). It keeps where in the image a feature fires, which raw pixels are good at on
        centred images; the SSL heads sit on block 4's flattened map, so training is unchanged.
      - ``block2``: the same read-out one block earlier (``2 * width * (size // 4) ** 2``, 3136 for
        28x28): finer spatial layout, a wider embedding.
    """

    def __init__(self, in_channels: int = 1, embedding_dim: int = 128, width: int = 32, readout: str = "pool",
                 image_size: int = 28, input_hw: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.readout = readout
        layers: list[nn.Module] = [
            _conv_block(in_channels, width),
            nn.MaxPool2d(2),  # 28 -> 14
            _conv_block(width, 2 * width),
            nn.MaxPool2d(2),  # 14 -> 7
            _conv_block(2 * width, 4 * width),
            nn.MaxPool2d(2),  # 7 -> 3
            _conv_block(4 * width, 8 * width),
        ]
        if readout == "pool":
            self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(8 * width, embedding_dim)
            self.ssl_dim = embedding_dim
        elif readout in MAP_READOUTS:
            height, width_in = input_hw or (image_size, image_size)  # non-square: a spectrogram
            self.features = nn.Sequential(*layers)
            self.standardize = nn.BatchNorm1d(map_readout_dim(readout, height, width_in, width), affine=False)
            self.ssl_dim = 8 * width * (height // 8) * (width_in // 8)
        else:
            raise ValueError(f"model.readout = {readout!r} is not one of {list(SMALLCNN_READOUTS)}")

    def forward(self, x: Tensor) -> Tensor:
        if self.readout == "pool":
            return self.fc(self.features(x))  # (batch, embedding_dim)
        return self.standardize(self.features[:self.readout_end](x).flatten(1))  # (batch, channels * cells)

    def ssl_features(self, x: Tensor) -> Tensor:
        if self.readout == "pool":
            return self(x)
        h = self.features[:self.readout_end](x)  # (batch, channels, side, side): the read-out map
        if self.training:
            self.standardize(h.detach().flatten(1))  # keeps the embedding's running statistics current
        return self.features[self.readout_end:](h).flatten(1)  # block 4: (batch, 8 * width * side * side)

    @property
    def readout_end(self) -> int:
        """How many layers of ``features`` (conv blocks and max-pools) the read-out map comes after."""
        return MAP_READOUTS[self.readout][0]


# read-out -> (layers of SmallCNN.features before it, its channels as a multiple of width, downsampling)
MAP_READOUTS = {"block2": (4, 2, 4), "block3": (6, 4, 8)}
SMALLCNN_READOUTS = ("pool", *MAP_READOUTS)


def map_readout_dim(readout: str, height: int, width_in: int, width: int = 32) -> int:
    """The embedding width of a block read-out: the max-pooled map of that block, flattened."""
    _, channels, down = MAP_READOUTS[readout]
    return channels * width * (height // down) * (width_in // down)



class ResNet18Encoder(Encoder):
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
        self.ssl_dim = embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (batch, embedding_dim)


# builder(model config) -> backbone mapping (batch, channels, size, size) to (batch, embedding_dim)
EncoderBuilder = Callable[[ModelConfig], nn.Module]
ENCODERS: Registry[EncoderBuilder] = Registry("model.encoder")
ENCODERS.add("smallcnn", lambda cfg: SmallCNN(cfg.in_channels, cfg.embedding_dim, readout=cfg.readout,
                                             image_size=cfg.image_size))
ENCODERS.add("resnet18", lambda cfg: ResNet18Encoder(cfg.in_channels, cfg.embedding_dim, cfg.small_stem))


def build_encoder(cfg: ModelConfig, input_hw: tuple[int, int] | None = None) -> nn.Module:
    """Build the backbone named by ``cfg.encoder``, for square images or an ``input_hw`` map (a spectrogram).

    Raises:
        ValueError: for an unknown encoder name (the message lists ``ENCODERS``).
    """
    if input_hw is not None and cfg.encoder == "smallcnn":
        return SmallCNN(cfg.in_channels, cfg.embedding_dim, readout=cfg.readout, input_hw=input_hw)
    return ENCODERS.get(cfg.encoder)(cfg)
