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
    replace_props(model, {**{p.key: p.value for p in model.metadata_props}, **meta.to_props()})
    model.doc_string = (f"fedssl encoder {meta.model.get('encoder', '?')} run {meta.run_id} round {meta.round}: "
                        f"{meta.input_name} ({meta.layout}, {meta.channels}x{meta.height}x{meta.width}) -> "
                        f"{meta.output_name} ({meta.embedding_dim})")
    return model


def replace_props(model: onnx.ModelProto, props: dict[str, str]) -> onnx.ModelProto:
    """Replace all of ``model.metadata_props`` with ``props``, sorted by key (in place; returns it)."""
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        model.metadata_props.add(key=key, value=value)
    return model


def trace(encoder: nn.Module, example: torch.Tensor, input_name: str, output_name: str,
          opset: int | None = None) -> onnx.ModelProto:
    """``encoder`` in eval mode as an ONNX model (weights inside) whose first input axis is a dynamic batch.

    ``example`` needs a batch of 2: a batch of 1 would be specialised away.

    Raises:
        RuntimeError: if the exporter fails (the message is torch's).
    """
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter, not ours to fix
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(encoder.eval(), (example,), raw, dynamo=True, external_data=False, opset_version=opset,
                          input_names=[input_name], output_names=[output_name],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
        return onnx.load(raw)


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
    model = trace(encoder, torch.zeros(2, meta.channels, meta.height, meta.width), meta.input_name, meta.output_name,
                  opset)
    save_model(set_metadata(model, meta.with_precision("fp32")), path)
    return path
