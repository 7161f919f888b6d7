"""Smaller, faster variants of an exported encoder: int8 (static, calibrated on real images) and fp16.

int8 uses onnxruntime's ``quantize_static`` in QDQ format with per-channel
weights, after its ``quant_pre_process`` (shape inference and graph
optimisation); activation ranges come from MinMax calibration over real images
fed through the training preprocessing. fp16 converts weights and compute with
``onnxruntime.transformers.float16`` but keeps float32 inputs and outputs, so
the device's preprocessing and index do not change. Either keeps the fedssl metadata.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from export.metadata import EncoderMetadata
from export.onnx_export import save_model, set_metadata
from export.retrieve.images import normalize


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds uint8 images ``(N, C, H, W)``, normalised as in training, in batches to the calibrator."""

    def __init__(self, images: np.ndarray, meta: EncoderMetadata, batch_size: int = 64) -> None:
        if len(images) == 0:
            raise ValueError("calibration needs at least one image")
        self.images, self.meta, self.batch_size = images, meta, batch_size
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.images):
            return None
        batch = self.images[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return {self.meta.input_name: normalize(batch, self.meta.mean, self.meta.std)}

    def rewind(self) -> None:
        self.position = 0


def quantize_int8(source: str | Path, target: str | Path, calibration_images: np.ndarray,
                  meta: EncoderMetadata) -> Path:
    """Write the int8 (QDQ, per-channel, MinMax-calibrated) version of the fp32 model ``source`` to ``target``."""
    target = Path(target)
    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(source), str(prepared))
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # quantize_static logs tips at WARNING on the root logger
        try:
            quantize_static(str(prepared), str(quantized), ImageCalibrationReader(calibration_images, meta),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().setLevel(level)
        model = onnx.load(quantized)
    save_model(set_metadata(model, meta.with_precision("int8")), target)
    return target


def topological_sort(graph: onnx.GraphProto) -> onnx.GraphProto:
    """Reorder ``graph.node`` so every node follows its inputs' producers (the fp16 converter appends casts last).

    Raises:
        ValueError: if the graph has a cycle or an input nobody produces.
    """
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in graph.node]
    pending, ordered = list(range(len(nodes))), []
    while pending:
        ready = [i for i in pending if all(name in available for name in nodes[i].input)]
        if not ready:
            raise ValueError(f"graph {graph.name!r}: unresolvable inputs of {[nodes[i].name for i in pending[:5]]}")
        for i in ready:
            available.update(nodes[i].output)
        ordered += [nodes[i] for i in ready]
        pending = sorted(set(pending) - set(ready))
    del graph.node[:]
    graph.node.extend(ordered)
    return graph


def convert_fp16(source: str | Path, target: str | Path, meta: EncoderMetadata) -> Path:
    """Write the float16 version of ``source`` (float32 inputs/outputs kept) to ``target``."""
    model = convert_float_to_float16(onnx.load(source), keep_io_types=True)
    topological_sort(model.graph)
    save_model(set_metadata(model, meta.with_precision("fp16")), Path(target))
    return Path(target)
