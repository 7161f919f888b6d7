"""SSL objectives, one module each; :func:`build_ssl_model` picks one by name."""

from collections.abc import Callable

from torch import nn

from fedssl.config import ModelConfig, SSLConfig
from fedssl.models.encoders import build_encoder
from fedssl.registry import Registry
from fedssl.ssl.barlow_twins import BarlowTwins, BarlowTwinsLoss
from fedssl.ssl.base import BACKBONE_PREFIX, MomentumTarget, SSLModel
from fedssl.ssl.byol import BYOL, BYOLLoss
from fedssl.ssl.catch_the_patch import CatchThePatch, CatchThePatchLoss
from fedssl.ssl.moco import MoCo, MoCoLoss
from fedssl.ssl.playback_speed import PlaybackSpeedLoss, PlaybackSpeedPrediction
from fedssl.ssl.rotation import RotationLoss, RotationPrediction
from fedssl.ssl.segment_order import SegmentOrderLoss, SegmentOrderPrediction
from fedssl.ssl.simclr import NTXentLoss, SimCLR
from fedssl.ssl.simsiam import SimSiam, SimSiamLoss

# builder(backbone, the backbone's output dim for the heads, ssl config) -> the SSL model around it
SSLBuilder = Callable[[nn.Module, int, SSLConfig], SSLModel]
METHODS: Registry[SSLBuilder] = Registry("ssl.method")
METHODS.add("simclr", lambda b, d, ssl: SimCLR(b, d, ssl.hidden_dim, ssl.proj_dim, ssl.temperature))
METHODS.add("byol", lambda b, d, ssl: BYOL(b, d, ssl.hidden_dim, ssl.proj_dim, ssl.momentum))
METHODS.add("barlowtwins", lambda b, d, ssl: BarlowTwins(b, d, ssl.hidden_dim, ssl.proj_dim, ssl.barlow_lambda))
METHODS.add("moco", lambda b, d, ssl: MoCo(b, d, ssl.hidden_dim, ssl.proj_dim, ssl.temperature, ssl.momentum,
                                          ssl.queue_size))
METHODS.add("simsiam", lambda b, d, ssl: SimSiam(b, d, ssl.hidden_dim, ssl.proj_dim))
METHODS.add("rotation", lambda b, d, ssl: RotationPrediction(b, d, ssl.hidden_dim))
METHODS.add("segment-order", lambda b, d, ssl: SegmentOrderPrediction(b, d, ssl.hidden_dim, ssl.segments))
METHODS.add("playback-speed", lambda b, d, ssl: PlaybackSpeedPrediction(b, d, ssl.hidden_dim))  # video only
METHODS.add("catch-the-patch", lambda b, d, ssl: CatchThePatch(b, d, ssl.hidden_dim))  # video only
BYOL_STYLE = ("byol", "simsiam", "moco")  # methods with a predictor or momentum target (FedU/FedEMA apply)


def build_ssl_model(ssl: SSLConfig, model: ModelConfig, backbone: nn.Module | None = None) -> SSLModel:
    """Wrap a backbone (a fresh one by default) with the heads of ``ssl.method``.

    Raises:
        ValueError: for an unknown method (the message lists ``METHODS``).
    """
    builder = METHODS.get(ssl.method)
    backbone = backbone if backbone is not None else build_encoder(model)
    dim = getattr(backbone, "ssl_dim", model.embedding_dim)  # what the heads see (a read-out may differ)
    return builder(backbone, dim, ssl)


__all__ = [
    "BACKBONE_PREFIX", "BYOL", "BYOL_STYLE", "METHODS", "BYOLLoss", "BarlowTwins", "BarlowTwinsLoss",
    "CatchThePatch", "CatchThePatchLoss", "MoCo", "MoCoLoss", "MomentumTarget", "NTXentLoss",
    "PlaybackSpeedLoss", "PlaybackSpeedPrediction", "RotationLoss", "RotationPrediction", "SSLBuilder",
    "SegmentOrderLoss", "SegmentOrderPrediction", "SSLModel",
    "SimCLR", "SimSiam", "SimSiamLoss", "build_ssl_model",
]
