"""Encoders (backbones) and the small heads SSL objectives put on top of them."""

from fedssl.models.encoders import ResNet18Encoder, SmallCNN, build_encoder
from fedssl.models.heads import MLPHead, PredictorHead, ProjectionHead

__all__ = ["MLPHead", "PredictorHead", "ProjectionHead", "ResNet18Encoder", "SmallCNN", "build_encoder"]
