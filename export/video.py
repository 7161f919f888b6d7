"""Video encoder checkpoint -> one ``.onnx`` file (grey clips in, embedding out), parity-checked, and int8.

``fedssl-export`` hands a checkpoint whose metadata says ``modality: video`` to :func:`export_video`:
the fp32 model is checked against PyTorch on real clips (a folder of video files, or clips drawn
like the generated corpus's) before it is moved into place, and the int8 variant quantises the 3D
convolutions (static QDQ, per channel, calibrated on the same kind of clips). The grey
standardisation and pooling stay float. The layout mirrors :mod:`export.audio`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from export.metadata import sha256_file, sidecar_path
from export.onnx_export import save_model
from export.parity import MAX_ABS_DIFF, MIN_COSINE, ParityError, ParityReport, compare
from fedssl.atomic import atomic_write_text

INPUT_NAME, OUTPUT_NAME = "clips", "embeddings"
PREFIX = "fedssl."


def video_props(meta: dict[str, Any], precision: str) -> dict[str, str]:
    """``metadata_props`` of a video model: what a device needs to feed it and read its output."""
    video = meta["video"]
    fields = {"modality": "video", "precision": precision, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
              "layout": "NTHW", "frames": video["frames"], "size": video["size"], "video": video,
              "scale": "grey pixel/255", "embedding_dim": meta["embedding_dim"], "run_id": meta.get("run_id", ""),
              "round": meta.get("round", 0), "model": meta.get("model", {}), "knn": meta.get("knn", {})}
    return {PREFIX + k: json.dumps(v) for k, v in fields.items()}


def _with_props(model: onnx.ModelProto, props: dict[str, str]) -> onnx.ModelProto:
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        model.metadata_props.add(key=key, value=value)
    return model


def export_video_encoder(encoder: nn.Module, meta: dict[str, Any], path: Path, opset: int | None = None) -> Path:
    """Export ``encoder``: ``clips`` (batch, frames, size, size) -> ``embeddings`` (batch, D), dynamic batch."""
    video = meta["video"]
    example = torch.zeros(2, int(video["frames"]), int(video["size"]), int(video["size"]))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(encoder.eval(), (example,), raw, dynamo=True, external_data=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
        model = onnx.load(raw)
    save_model(_with_props(model, video_props(meta, "fp32")), path)
    return path


def onnx_embed(path: str | Path, clips: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Embeddings of float clips in [0, 1] ``(N, frames, size, size)`` by onnxruntime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {INPUT_NAME: clips[i:i + batch_size].astype(np.float32)})[0]
                           for i in range(0, len(clips), batch_size)])


@torch.no_grad()
def torch_embed_video(encoder: nn.Module, clips: np.ndarray) -> np.ndarray:
    return encoder.eval()(torch.from_numpy(clips.astype(np.float32))).numpy()


def check_video_parity(encoder: nn.Module, path: Path, clips: np.ndarray, max_abs_diff: float = MAX_ABS_DIFF,
                       min_cosine: float = MIN_COSINE) -> ParityReport:
    """onnxruntime vs PyTorch on ``clips``, batched and the first 4 one at a time.

    Raises:
        ParityError: if the limits are exceeded.
    """
    reference = torch_embed_video(encoder, clips)
    batched = onnx_embed(path, clips)
    single = np.concatenate([onnx_embed(path, clips[i:i + 1]) for i in range(min(4, len(clips)))])
    diff, cos = compare(reference, batched)
    diff1, cos1 = compare(reference[:len(single)], single)
    report = ParityReport(len(clips), (1, len(clips)), max(diff, diff1), min(cos, cos1), max_abs_diff, min_cosine)
    if not report.ok:
        raise ParityError(f"PARITY FAILED for {path}: onnxruntime vs PyTorch on {len(clips)} clips: max |diff| "
                          f"{report.max_abs_diff:.3g} (limit {max_abs_diff:g}), min cosine {report.min_cosine:.6f}",
                          report)
    return report


class _ClipReader(CalibrationDataReader):
    def __init__(self, clips: np.ndarray, batch_size: int = 16) -> None:
        self.clips, self.batch_size, self.position = clips.astype(np.float32), batch_size, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.clips):
            return None
        batch = self.clips[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return {INPUT_NAME: batch}

    def rewind(self) -> None:
        self.position = 0


def quantize_video_int8(source: Path, target: Path, calibration: np.ndarray, meta: dict[str, Any]) -> Path:
    """int8 QDQ, per-channel, MinMax-calibrated, on ``Conv`` nodes (3D convolutions) only."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        try:
            quantize_static(str(prepared), str(quantized), _ClipReader(calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv"])
        finally:
            logging.getLogger().setLevel(level)
        model = onnx.load(quantized)
    save_model(_with_props(model, video_props(meta, "int8")), target)
    return target


def real_clips(folder: str | None, count: int, meta: dict[str, Any], seed: int) -> np.ndarray:
    """``count`` float clips of the model's input: centre windows of a folder's videos, or clips drawn like the
    generated corpus's (moving Fashion-MNIST test garments).

    Raises:
        ValueError: if the folder holds no usable video.
    """
    from fedssl.data.video import load_video_folder
    from fedssl.data.video_corpus import MOTIONS, CorpusSpec, draw_garments, finish, render, trajectories

    frames, size = int(meta["video"]["frames"]), int(meta["video"]["size"])
    rng = np.random.default_rng(seed)
    if folder:
        clips = load_video_folder(folder, size, frames).clips
        clips = clips[np.sort(rng.choice(len(clips), min(count, len(clips)), replace=False))]
    else:
        spec = CorpusSpec(frames=frames, size=size, seed=seed)
        objects, _ = draw_garments("test", count, rng)
        motions = np.arange(count) % len(MOTIONS)
        clips = finish(render(objects, *trajectories(motions, spec, rng), spec), rng)
    return clips.astype(np.float32) / 255.0


def export_video(encoder: nn.Module, meta: dict[str, Any], checkpoint: Path, output: Path, *, video_dir: str | None,
                 int8: bool, parity_count: int = 64, calibration_count: int = 128, opset: int | None = None,
                 max_abs_diff: float = MAX_ABS_DIFF, min_cosine: float = MIN_COSINE) -> list[dict[str, Any]]:
    """Export, check, quantise and write sidecars; one summary row per file written.

    Raises:
        ParityError: if the fp32 model does not match PyTorch (nothing is written then).
    """
    clips = real_clips(video_dir, parity_count, meta, seed=1)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        staged = export_video_encoder(encoder, meta, Path(tmp) / output.name, opset)
        parity = check_video_parity(encoder, staged, clips, max_abs_diff, min_cosine)
        staged.replace(output)
    files = {"fp32": output}
    if int8:
        calibration = real_clips(video_dir, calibration_count, meta, seed=2)
        files["int8"] = quantize_video_int8(output, output.with_name(f"{output.stem}.int8{output.suffix}"),
                                            calibration, meta)
    reference, rows = torch_embed_video(encoder, clips), []
    for precision, path in files.items():
        diff, cos = compare(reference, onnx_embed(path, clips))
        doc = {"model_file": path.name, "sha256": sha256_file(path), "source_checkpoint": str(checkpoint.resolve()),
               **{k[len(PREFIX):]: json.loads(v) for k, v in video_props(meta, precision).items()},
               "vs_torch": {"clips": len(clips), "max_abs_diff": diff, "min_cosine": cos}}
        if precision == "fp32":
            doc["parity"] = parity.to_dict()
        atomic_write_text(sidecar_path(path), json.dumps(doc, indent=2) + "\n")
        rows.append({"precision": precision, "path": path, "mb": path.stat().st_size / 2**20, "max_abs_diff": diff,
                     "min_cosine": cos})
        print(f"  {str(path):<40} {precision}  {rows[-1]['mb']:5.2f} MB  vs torch: max|diff| {diff:.2e}  "
              f"min cos {cos:.6f}")
    return rows
