"""Self-describing checkpoints written atomically, so a crash never leaves a half file.

An encoder checkpoint holds the backbone weights plus everything export needs:
architecture, input size and channels, normalisation, embedding dimension.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import torch

from fedssl.atomic import atomic_write_bytes
from fedssl.augment import normalization
from fedssl.config import ModelConfig
from fedssl.models.encoders import build_encoder

FORMAT_VERSION = 1


def atomic_torch_save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def encoder_metadata(model_cfg: ModelConfig) -> dict[str, Any]:
    mean, std = normalization(model_cfg.in_channels)
    return {
        "format_version": FORMAT_VERSION,
        "model": dataclasses.asdict(model_cfg),
        "input": {"channels": model_cfg.in_channels, "height": model_cfg.image_size,
                  "width": model_cfg.image_size, "mean": list(mean), "std": list(std),
                  "layout": "NCHW", "scale": "pixel/255"},
        "embedding_dim": model_cfg.embedding_dim,
    }


def save_encoder(path: Path, backbone_state: dict[str, torch.Tensor], model_cfg: ModelConfig,
                 frontend: dict[str, Any] | None = None, **extra: Any) -> None:
    """Save a bare-encoder state dict (keys without ``backbone.``) with its metadata and extras.

    ``frontend`` (an audio encoder's :class:`fedssl.models.frontend.FrontendSpec` as a dict) makes the
    checkpoint describe a waveform input, ``(batch, num_samples)`` float in [-1, 1].
    """
    meta = encoder_metadata(model_cfg)
    if frontend is not None:
        meta["frontend"] = dict(frontend)
        meta["modality"] = "audio"
        meta["input"] = {"layout": "NT", "samples": frontend["num_samples"], "sample_rate": frontend["sample_rate"],
                         "channels": 1, "scale": "float waveform in [-1, 1], mono"}
    atomic_torch_save(path, {"encoder": backbone_state, "meta": {**meta, **extra}})


def load_encoder(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the encoder from a checkpoint alone; returns (encoder in eval mode, metadata).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if it is not an encoder checkpoint of a known format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or "encoder" not in ckpt or "meta" not in ckpt:
        raise ValueError(f"{path} is not a fedssl encoder checkpoint (keys: {list(ckpt)[:5]})")
    meta = ckpt["meta"]
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {meta.get('format_version')} != {FORMAT_VERSION}")
    encoder = _build(meta)
    encoder.load_state_dict(ckpt["encoder"], strict=True)
    return encoder.eval(), meta


def _build(meta: dict[str, Any]) -> torch.nn.Module:
    """The encoder a checkpoint's metadata describes: an image backbone, front end + backbone for audio,
    or a 3D CNN for video."""
    model_cfg = ModelConfig(**meta["model"])
    if meta.get("modality") == "video":
        from fedssl.video.model import build_video_encoder

        return build_video_encoder(meta["video"]["encoder"])
    if "frontend" not in meta:
        return build_encoder(model_cfg)
    from fedssl.models.frontend import AudioEncoder, FrontendSpec

    spec = FrontendSpec(**meta["frontend"])
    return AudioEncoder(spec, build_encoder(model_cfg, input_hw=(spec.n_mels, spec.frames)))
