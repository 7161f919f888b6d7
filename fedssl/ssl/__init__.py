"""SSL objectives, one module each; :func:`build_ssl_model` picks one by name."""

from torch import nn

from fedssl.config import ModelConfig, SSLConfig
from fedssl.models.encoders import build_encoder
from fedssl.ssl.barlow_twins import BarlowTwins, BarlowTwinsLoss
from fedssl.ssl.base import BACKBONE_PREFIX, MomentumTarget, SSLModel
from fedssl.ssl.byol import BYOL, BYOLLoss
from fedssl.ssl.moco import MoCo, MoCoLoss
from fedssl.ssl.rotation import RotationLoss, RotationPrediction
from fedssl.ssl.simclr import NTXentLoss, SimCLR
from fedssl.ssl.simsiam import SimSiam, SimSiamLoss


def build_ssl_model(ssl: SSLConfig, model: ModelConfig, backbone: nn.Module | None = None) -> SSLModel:
    """Wrap a backbone (a fresh one by default) with the heads of ``ssl.method``.

    Raises:
        ValueError: for an unknown method.
    """
    backbone = backbone if backbone is not None else build_encoder(model)
    d, h, p = getattr(backbone, "ssl_dim", model.embedding_dim), ssl.hidden_dim, ssl.proj_dim
    if ssl.method == "simclr":
        return SimCLR(backbone, d, h, p, ssl.temperature)
    if ssl.method == "byol":
        return BYOL(backbone, d, h, p, ssl.momentum)
    if ssl.method == "barlowtwins":
        return BarlowTwins(backbone, d, h, p, ssl.barlow_lambda)
    if ssl.method == "moco":
        return MoCo(backbone, d, h, p, ssl.temperature, ssl.momentum, ssl.queue_size)
    if ssl.method == "simsiam":
        return SimSiam(backbone, d, h, p)
    if ssl.method == "rotation":
        return RotationPrediction(backbone, d, h)
    raise ValueError(f"ssl.method = {ssl.method!r} is not one of "
                     "['simclr', 'byol', 'barlowtwins', 'moco', 'simsiam', 'rotation']")


__all__ = [
    "BACKBONE_PREFIX", "BYOL", "BYOLLoss", "BarlowTwins", "BarlowTwinsLoss", "MoCo", "MoCoLoss",
    "MomentumTarget", "NTXentLoss", "RotationLoss", "RotationPrediction", "SSLModel", "SimCLR",
    "SimSiam", "SimSiamLoss", "build_ssl_model",
]
