"""Video encoders: grey clips ``(batch, frames, size, size)`` float in [0, 1] -> embeddings ``(batch, dim)``.

- ``r3d-tiny`` (default): a small 3D ResNet (one residual block per stage, widths ``w, 2w, 4w, 8w``;
  0.35 M parameters at ``w = 10``) that trains at a useful speed on 2 CPU cores.
- ``r3d-18``: torchvision's R3D-18 (33 M parameters, random init), FedVSSL's backbone [0], with a
  one-channel stem for grey clips: the option for GPU nodes.

The embedding is the global average of the last stage's feature map (no projection), so only
backbone weights travel and export. Grey values are standardised inside the encoder: the exported
model takes frames scaled to [0, 1], like the image encoders' ``pixel/255``.

[0] FedVSSL, 2022, arXiv:2207.01975; [1] R3D, Tran et al., 2018, arXiv:1711.11248
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from fedssl.registry import Registry

MEAN, STD = 0.1, 0.2  # grey level of the generated clips (dark canvas, bright object); BatchNorm absorbs the rest


def _conv_bn(c_in: int, c_out: int, stride: int | tuple[int, int, int] = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(c_out))


class BasicBlock3d(nn.Module):
    """Two 3x3x3 convolutions with an identity (or 1x1x1 strided) shortcut.

    Shape: (B, c_in, T, H, W) -> (B, c_out, T', H', W')
    """

    def __init__(self, c_in: int, c_out: int, stride: int | tuple[int, int, int] = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c_in, c_out, stride), nn.ReLU(inplace=True), _conv_bn(c_out, c_out))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv3d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm3d(c_out)))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class VideoEncoder(nn.Module):
    """A 3D trunk plus the grey standardisation and global pooling every video encoder shares.

    Shape: (batch, frames, size, size) float in [0, 1] -> (batch, embedding_dim)
    """

    def __init__(self, trunk: nn.Module, embedding_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.ssl_dim = self.embedding_dim = embedding_dim

    def feature_map(self, x: Tensor) -> Tensor:
        """The last stage's map. Shape: (B, T, H, W) -> (B, dim, T', H', W')"""
        return self.trunk((x.unsqueeze(1) - MEAN) / STD)

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_map(x).mean(dim=(2, 3, 4))


def r3d_tiny(width: int = 10) -> VideoEncoder:
    """A stem halving space (32x32 -> 16x16), then stages of ``w, 2w, 4w, 8w`` channels, each after the first
    halving time and space (16 frames of 32x32 end as a 2x2x2 map)."""
    widths = (width, 2 * width, 4 * width, 8 * width)
    stem = nn.Sequential(nn.Conv3d(1, width, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2), bias=False),
                         nn.BatchNorm3d(width), nn.ReLU(inplace=True))
    layers: list[nn.Module] = [stem, BasicBlock3d(width, widths[0])]
    for c_in, c_out in zip(widths, widths[1:]):
        layers.append(BasicBlock3d(c_in, c_out, stride=2))
    return VideoEncoder(nn.Sequential(*layers), widths[-1])


def r3d_18() -> VideoEncoder:
    """torchvision's R3D-18 without its classifier, random init, with a one-channel stem."""
    from fedssl._torchvision import torchvision

    net = torchvision.models.video.r3d_18(weights=None)
    net.stem[0] = nn.Conv3d(1, 64, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
    trunk = nn.Sequential(net.stem, net.layer1, net.layer2, net.layer3, net.layer4)
    return VideoEncoder(trunk, 512)


# builder() -> a fresh encoder; names are the values of ``video.encoder``
VIDEO_ENCODERS: Registry[Callable[[], VideoEncoder]] = Registry("video.encoder")
VIDEO_ENCODERS.add("r3d-tiny", r3d_tiny)
VIDEO_ENCODERS.add("r3d-18", r3d_18)
EMBEDDING_DIMS = {"r3d-tiny": 80, "r3d-18": 512}  # what model.embedding-dim must be for each


def build_video_encoder(name: str) -> VideoEncoder:
    """A fresh, randomly initialised encoder named by ``video.encoder``.

    Raises:
        ValueError: for an unknown name (the message lists ``VIDEO_ENCODERS``).
    """
    return VIDEO_ENCODERS.get(name)()
