"""What a device needs to know about an exported encoder, stored twice: in the ONNX model and beside it.

The ONNX model's ``metadata_props`` carry flat string key/values (every value
JSON-encoded); the sidecar ``<model>.json`` carries the same fields plus what
can only be known after the file is written (its sha256, parity, accuracy).

Pure Python: the device side (``export.retrieve``) reads this without torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedssl.atomic import atomic_write_text

PREFIX = "fedssl."  # metadata_props keys are namespaced so torch's own props never collide
PRECISIONS = ("fp32", "int8", "fp16")
INPUT_NAME, OUTPUT_NAME = "images", "embeddings"


@dataclass(frozen=True)
class EncoderMetadata:
    """Everything needed to preprocess an image and interpret the embedding.

    Preprocessing (identical to training): decode to ``channels`` ('L' or 'RGB'), resize to
    ``height x width`` bilinearly, uint8 / 255, then ``(x - mean) / std`` per channel, NCHW.
    """

    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    embedding_dim: int
    run_id: str = ""
    round: int = 0
    knn: dict[str, float] = field(default_factory=dict)  # the federation's kNN top-1 per probe task
    model: dict[str, Any] = field(default_factory=dict)  # the encoder's architecture config
    precision: str = "fp32"
    layout: str = "NCHW"
    scale: str = "pixel/255"
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME

    def __post_init__(self) -> None:
        for name in ("channels", "height", "width", "embedding_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} = {value!r} must be a whole number >= 1")
        if self.channels not in (1, 3):
            raise ValueError(f"channels = {self.channels} must be 1 or 3")
        if self.height != self.width:
            raise ValueError(f"height {self.height} != width {self.width}: images are resized to squares")
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (*self.mean, *self.std)) or \
                not all(v > 0 for v in self.std):
            raise ValueError(f"mean {self.mean} / std {self.std} must be finite numbers, std > 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision = {self.precision!r} is not one of {list(PRECISIONS)}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean {self.mean} / std {self.std} do not have {self.channels} channel(s)")

    @classmethod
    def from_checkpoint_meta(cls, meta: Mapping[str, Any]) -> EncoderMetadata:
        """From ``load_encoder(path)[1]`` (fedssl/checkpoint.py)."""
        inp = meta["input"]
        return cls(channels=int(inp["channels"]), height=int(inp["height"]), width=int(inp["width"]),
                   mean=tuple(float(v) for v in inp["mean"]), std=tuple(float(v) for v in inp["std"]),
                   embedding_dim=int(meta["embedding_dim"]), run_id=str(meta.get("run_id", "")),
                   round=int(meta.get("round", 0)),
                   knn={k: float(v) for k, v in (meta.get("knn") or {}).items()},
                   model=dict(meta.get("model", {})))

    def with_precision(self, precision: str) -> EncoderMetadata:
        return EncoderMetadata(**{**asdict(self), "precision": precision})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def to_props(self) -> dict[str, str]:
        """Flat ``{"fedssl.<field>": json}`` for ONNX ``metadata_props``."""
        return {PREFIX + k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "model") -> EncoderMetadata:
        """Inverse of :meth:`to_props`.

        Raises:
            ValueError: if the fedssl keys are missing or malformed (not a fedssl-exported model).
        """
        values = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        try:
            parsed = {k: json.loads(v) for k, v in values.items() if k in cls.__dataclass_fields__}
            parsed["mean"], parsed["std"] = tuple(parsed["mean"]), tuple(parsed["std"])
            return cls(**parsed)
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{source} carries no valid fedssl metadata ({exc!r}); "
                             "export it with fedssl-export") from exc


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes: the identity of a model for an index."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(model_path: str | Path) -> Path:
    """``encoder.onnx`` -> ``encoder.json``; ``encoder.int8.onnx`` -> ``encoder.int8.json``."""
    return Path(model_path).with_suffix(".json")


def write_sidecar(model_path: str | Path, meta: EncoderMetadata, **extra: Any) -> Path:
    """``<model>.json``: the metadata, the model's sha256 and file name, and ``extra`` (parity, accuracy)."""
    model_path = Path(model_path)
    path = sidecar_path(model_path)
    doc = {"model_file": model_path.name, "sha256": sha256_file(model_path), **meta.to_dict(), **extra}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path
