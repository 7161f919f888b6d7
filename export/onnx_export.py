"""Encoder checkpoint -> one self-describing ``.onnx`` file with a dynamic batch axis.

Uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) with
``external_data=False`` so the weights live inside the single file a device
receives, and stores :class:`export.metadata.EncoderMetadata` in the model's
``metadata_props``.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from export.metadata import EncoderMetadata
from fedssl.atomic import atomic_write_bytes


def set_metadata(model: onnx.ModelProto, meta: EncoderMetadata) -> onnx.ModelProto:
    """Replace the fedssl entries of ``model.metadata_props`` with ``meta`` (in place; returns it)."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update(meta.to_props())
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        model.metadata_props.add(key=key, value=value)
    model.doc_string = (f"fedssl encoder {meta.model.get('encoder', '?')} run {meta.run_id} round {meta.round}: "
                        f"{meta.input_name} ({meta.layout}, {meta.channels}x{meta.height}x{meta.width}) -> "
                        f"{meta.output_name} ({meta.embedding_dim})")
    return model


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Check and write ``model`` as one file (no external data), atomically."""
    onnx.checker.check_model(model)
    atomic_write_bytes(path, model.SerializeToString())


def export_encoder(encoder: nn.Module, meta: EncoderMetadata, path: str | Path, opset: int | None = None) -> Path:
    """Export ``encoder`` (eval mode) to ``path``: input ``images`` (batch, C, H, W) -> ``embeddings`` (batch, D).

    Raises:
        RuntimeError: if the exporter fails (the message is torch's).
    """
    path = Path(path)
    encoder = encoder.eval()
    example = torch.zeros(2, meta.channels, meta.height, meta.width)  # batch 2: 1 would be specialised away
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not ours to fix
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(encoder, (example,), raw, dynamo=True, external_data=False, opset_version=opset,
                          input_names=[meta.input_name], output_names=[meta.output_name],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
        model = onnx.load(raw)
    save_model(set_metadata(model, meta.with_precision("fp32")), path)
    return path
