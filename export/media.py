"""Audio and video encoders -> ``.onnx``: a float array in (waveforms, clips), parity-checked, and int8.

What the two share: the model takes its input as the device computes it (no image preprocessing),
the fp32 file is checked against PyTorch on real inputs before it is moved into place, the int8
variant quantises the convolutions only (static QDQ, per channel, MinMax-calibrated on the same
kind of inputs), and each file gets a sidecar. What differs lives in a :class:`MediaSpec` built by
:mod:`export.audio` and :mod:`export.video`.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from export.metadata import PREFIX, sha256_file, sidecar_path
from export.onnx_export import replace_props, save_model, trace
from export.parity import MIN_COSINE, check_array_parity, compare, onnx_embed, torch_embed_array
from fedssl.atomic import atomic_write_text

OUTPUT_NAME = "embeddings"


@dataclass(frozen=True)
class MediaSpec:
    """One modality's export: its input, the metadata a device reads, and batch sizes.

    ``fields`` are the modality's own ``metadata_props`` (layout, sizes, scale), stored between the
    common head (modality, precision, input and output names) and tail (embedding size, run, round,
    model, kNN) taken from the checkpoint's metadata ``meta``.
    """

    modality: str  # "audio", "video"
    input_name: str  # "waveforms", "clips"
    noun: str  # what the inputs are called in messages and sidecars
    example: tuple[int, ...]  # one input's shape, without the batch axis
    fields: dict[str, Any]
    meta: dict[str, Any]
    embed_batch: int  # inputs per onnxruntime call when comparing with PyTorch
    calibration_batch: int  # inputs per calibration batch of the int8 variant

    def props(self, precision: str) -> dict[str, str]:
        """``metadata_props``: what a device needs to feed the model and read its output."""
        m = self.meta
        fields = {"modality": self.modality, "precision": precision, "input_name": self.input_name,
                  "output_name": OUTPUT_NAME, **self.fields, "embedding_dim": m["embedding_dim"],
                  "run_id": m.get("run_id", ""), "round": m.get("round", 0), "model": m.get("model", {}),
                  "knn": m.get("knn", {})}
        return {PREFIX + k: json.dumps(v) for k, v in fields.items()}


def export_fp32(encoder: nn.Module, spec: MediaSpec, path: Path, opset: int | None = None) -> Path:
    """Export ``encoder``: ``spec.input_name`` (batch, *example) -> ``embeddings`` (batch, D), dynamic batch."""
    model = trace(encoder, torch.zeros(2, *spec.example), spec.input_name, OUTPUT_NAME, opset)
    save_model(replace_props(model, spec.props("fp32")), path)
    return path


class _ArrayReader(CalibrationDataReader):
    def __init__(self, inputs: np.ndarray, input_name: str, batch_size: int) -> None:
        self.inputs, self.input_name, self.batch_size = inputs.astype(np.float32), input_name, batch_size
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.inputs):
            return None
        batch = self.inputs[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.position = 0


def quantize_int8(source: Path, target: Path, calibration: np.ndarray, spec: MediaSpec) -> Path:
    """int8 QDQ, per-channel, MinMax-calibrated, on ``Conv`` nodes only (an STFT front end, standardisation and
    pooling stay float)."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)  # its symbolic pass fails on STFT
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # quantize_static logs tips at WARNING on the root logger
        try:
            quantize_static(str(prepared), str(quantized),
                            _ArrayReader(calibration, spec.input_name, spec.calibration_batch),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
        finally:
            logging.getLogger().setLevel(level)
        model = onnx.load(quantized)
    save_model(replace_props(model, spec.props("int8")), target)
    return target


def export_media(encoder: nn.Module, spec: MediaSpec, samples: Callable[[int, int], np.ndarray], checkpoint: Path,
                 output: Path, *, int8: bool, parity_count: int = 64, calibration_count: int = 128,
                 opset: int | None = None, max_abs_diff: float, min_cosine: float = MIN_COSINE) -> list[dict[str, Any]]:
    """Export, check, quantise and write sidecars; one summary row per file written.

    ``samples(count, seed)``: real inputs (parity on seed 1, calibration on seed 2).

    Raises:
        ParityError: if the fp32 model does not match PyTorch (nothing is written then).
    """
    inputs = samples(parity_count, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        staged = export_fp32(encoder, spec, Path(tmp) / output.name, opset)
        parity = check_array_parity(encoder, staged, inputs, spec.noun, max_abs_diff, min_cosine, spec.embed_batch)
        staged.replace(output)
    files = {"fp32": output}
    if int8:
        files["int8"] = quantize_int8(output, output.with_name(f"{output.stem}.int8{output.suffix}"),
                                      samples(calibration_count, 2), spec)
    reference, rows = torch_embed_array(encoder, inputs), []
    for precision, path in files.items():
        diff, cos = compare(reference, onnx_embed(path, inputs, spec.embed_batch))
        doc = {"model_file": path.name, "sha256": sha256_file(path), "source_checkpoint": str(checkpoint.resolve()),
               **{k[len(PREFIX):]: json.loads(v) for k, v in spec.props(precision).items()},
               "vs_torch": {spec.noun: len(inputs), "max_abs_diff": diff, "min_cosine": cos}}
        if precision == "fp32":
            doc["parity"] = parity.to_dict()
        atomic_write_text(sidecar_path(path), json.dumps(doc, indent=2) + "\n")
        rows.append({"precision": precision, "path": path, "mb": path.stat().st_size / 2**20, "max_abs_diff": diff,
                     "min_cosine": cos})
        print(f"  {str(path):<40} {precision}  {rows[-1]['mb']:5.2f} MB  vs torch: max|diff| {diff:.2e}  "
              f"min cos {cos:.6f}")
    return rows
