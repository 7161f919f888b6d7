"""Cutting an encoder into a device-side stem and a server-side trunk (split learning).

``split_encoder(encoder, cut)`` returns two modules that *share* the encoder's layers and keep its
state-dict keys: ``trunk(stem(x)) == encoder(x)``, ``trunk.ssl_features(stem(x)) ==
encoder.ssl_features(x)``, and the union of their state dicts is the encoder's, so the whole encoder
is rebuilt for probes and export by loading both (:func:`join_states`). ``cut`` counts encoder
blocks run on the device: SmallCNN has 4 (each conv block with its max-pool), ResNet-18 has 5
(the stem convolution, then ``layer1`` .. ``layer4``). The trunk keeps at least one block.
[0] MocoSFL, Li et al., ICLR 2023 (client-side and server-side models)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from fedssl.config import ModelConfig
from fedssl.models.encoders import MAP_READOUTS, ResNet18Encoder, SmallCNN
from fedssl.registry import Registry


class Stem(nn.Module):
    """The device's part: the first ``cut`` blocks, under the encoder's own attribute name.

    Shape: (batch, channels, size, size) -> (batch, C', H', W')
    """

    def __init__(self, attr: str, layers: OrderedDict[str, nn.Module]) -> None:
        super().__init__()
        self._attr = attr
        self.add_module(attr, nn.Sequential(layers))

    def forward(self, x: Tensor) -> Tensor:
        return getattr(self, self._attr)(x)


class SmallCNNTrunk(nn.Module):
    """The blocks of a :class:`SmallCNN` after the cut, with its read-out (same keys, same maths)."""

    def __init__(self, encoder: SmallCNN, start: int) -> None:
        super().__init__()
        self.readout = encoder.readout
        self.ssl_dim = encoder.ssl_dim
        self.features = nn.Sequential(OrderedDict(
            (str(i), encoder.features[i]) for i in range(start, len(encoder.features))))
        if encoder.readout == "pool":
            self.fc = encoder.fc
        else:  # trunk layers before the read-out map (SplitPoint.check keeps the cut at or before it)
            self._to_readout = encoder.readout_end - start
            self.standardize = encoder.standardize

    def forward(self, h: Tensor) -> Tensor:
        if self.readout == "pool":
            return self.fc(self.features(h))  # (batch, embedding_dim)
        return self.standardize(self.features[:self._to_readout](h).flatten(1))

    def ssl_features(self, h: Tensor) -> Tensor:
        if self.readout == "pool":
            return self(h)
        h = self.features[:self._to_readout](h)
        if self.training:
            self.standardize(h.detach().flatten(1))  # the embedding's running statistics, as SmallCNN does
        return self.features[self._to_readout:](h).flatten(1)  # block 4: (batch, 8 * width * side * side)


class ResNetTrunk(nn.Module):
    """``layer<cut>`` .. ``layer4``, pooling and ``fc`` of a :class:`ResNet18Encoder`."""

    def __init__(self, encoder: ResNet18Encoder, names: list[str]) -> None:
        super().__init__()
        self.ssl_dim = encoder.ssl_dim
        layers = OrderedDict((n, getattr(encoder.net, n)) for n in names)
        layers["flatten"] = nn.Flatten()  # torchvision flattens in forward; no parameters, no keys
        layers["fc"] = encoder.net.fc
        layers.move_to_end("fc")
        self.net = nn.Sequential(layers)

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)  # (batch, embedding_dim)

    def ssl_features(self, h: Tensor) -> Tensor:
        return self(h)


@dataclass(frozen=True)
class SplitPoint:
    """Where one encoder may be cut: ``blocks`` in all, the device runs 1 .. ``blocks - 1`` of them."""

    blocks: int
    cut: Callable[[nn.Module, int], tuple[Stem, nn.Module]]
    readout_blocks: Callable[[ModelConfig], int] = lambda model: 0  # blocks the embedding is read after; 0: last

    def check(self, model: ModelConfig, cut: int) -> int:
        """``cut`` itself if this encoder can be cut there (the server computes the read-out).

        Raises:
            ValueError: naming ``split.cut``, the value and the allowed range.
        """
        if not 1 <= cut < self.blocks:
            raise ValueError(f"run config 'split.cut' = {cut} is out of range [1, {self.blocks - 1}] for "
                             f"'model.encoder' = {model.encoder!r} ({self.blocks} blocks; the server keeps one)")
        readout = self.readout_blocks(model)
        if readout and cut > readout:
            raise ValueError(f"run config 'split.cut' = {cut} puts the read-out of 'model.readout' = "
                             f"{model.readout!r} (after block {readout}) on the device: cut at most {readout} blocks")
        return cut


def _cut_smallcnn(encoder: nn.Module, cut: int) -> tuple[Stem, nn.Module]:
    assert isinstance(encoder, SmallCNN)
    end = 2 * cut  # each block is a conv block and a max-pool
    stem = Stem("features", OrderedDict((str(i), encoder.features[i]) for i in range(end)))
    return stem, SmallCNNTrunk(encoder, end)


_RESNET_BLOCKS = (("conv1", "bn1", "relu", "maxpool"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))


def _cut_resnet(encoder: nn.Module, cut: int) -> tuple[Stem, nn.Module]:
    assert isinstance(encoder, ResNet18Encoder)
    device = [n for block in _RESNET_BLOCKS[:cut] for n in block]
    server = [n for block in _RESNET_BLOCKS[cut:] for n in block] + ["avgpool"]
    return Stem("net", OrderedDict((n, getattr(encoder.net, n)) for n in device)), ResNetTrunk(encoder, server)


SPLIT_POINTS: Registry[SplitPoint] = Registry("model.encoder")  # an encoder without an entry cannot be split
SPLIT_POINTS.add("smallcnn", SplitPoint(blocks=4, cut=_cut_smallcnn, readout_blocks=lambda model: (
    MAP_READOUTS[model.readout][0] // 2 if model.readout in MAP_READOUTS else 0)))
SPLIT_POINTS.add("resnet18", SplitPoint(blocks=5, cut=_cut_resnet))


def split_encoder(encoder: nn.Module, model: ModelConfig, cut: int) -> tuple[Stem, nn.Module]:
    """``(stem, trunk)`` sharing ``encoder``'s layers, cut after ``cut`` blocks.

    Raises:
        ValueError: if ``model.encoder`` cannot be split, or not at ``cut``.
    """
    point = SPLIT_POINTS.get(model.encoder)
    point.check(model, cut)
    return point.cut(encoder, cut)


def join_states(stem: Mapping[str, Tensor], trunk: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The whole encoder's state dict from its two parts (their keys never overlap).

    Raises:
        ValueError: if a key is in both.
    """
    shared = set(stem) & set(trunk)
    if shared:
        raise ValueError(f"stem and trunk share keys {sorted(shared)[:3]}: they are not two parts of one encoder")
    return {**stem, **trunk}
