"""Audio encoder checkpoint -> one ``.onnx`` file with the log-mel front end inside (waveform in, embedding out).

``fedssl-export`` hands a checkpoint whose metadata says ``modality: audio`` to :func:`export_audio`:
the fp32 model is checked against PyTorch on real waveforms (a folder of audio files, or
synthetic notes of the corpus generator) before it is moved into place, and the int8 variant
quantises the convolutions only (static, calibrated on the same kind of waveforms): the STFT and
the mel filterbank stay float, so the spectrogram a device computes is the one training saw.
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

INPUT_NAME, OUTPUT_NAME = "waveforms", "embeddings"
# The STFT, log and per-clip standardisation run in float32 in both runtimes, and the block3 read-out
# standardises each dimension: measured max |diff| ~2e-4 at cosine 1.000000 on synthetic notes.
AUDIO_MAX_ABS_DIFF = 1e-3
PREFIX = "fedssl."


def audio_props(meta: dict[str, Any], precision: str) -> dict[str, str]:
    """``metadata_props`` of an audio model: what a device needs to feed it and read its output."""
    frontend = meta["frontend"]
    fields = {"modality": "audio", "precision": precision, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
              "layout": "NT", "sample_rate": frontend["sample_rate"], "samples": frontend["num_samples"],
              "scale": "mono float waveform in [-1, 1]", "frontend": frontend, "embedding_dim": meta["embedding_dim"],
              "run_id": meta.get("run_id", ""), "round": meta.get("round", 0), "model": meta.get("model", {}),
              "knn": meta.get("knn", {})}
    return {PREFIX + k: json.dumps(v) for k, v in fields.items()}


def _with_props(model: onnx.ModelProto, props: dict[str, str]) -> onnx.ModelProto:
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        model.metadata_props.add(key=key, value=value)
    return model


def export_audio_encoder(encoder: nn.Module, meta: dict[str, Any], path: Path, opset: int | None = None) -> Path:
    """Export ``encoder``: ``waveforms`` (batch, samples) -> ``embeddings`` (batch, D), dynamic batch."""
    samples = int(meta["frontend"]["num_samples"])
    example = torch.zeros(2, samples)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(encoder.eval(), (example,), raw, dynamo=True, external_data=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
        model = onnx.load(raw)
    save_model(_with_props(model, audio_props(meta, "fp32")), path)
    return path


def onnx_embed(path: str | Path, waves: np.ndarray, batch_size: int = 64) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {INPUT_NAME: waves[i:i + batch_size].astype(np.float32)})[0]
                           for i in range(0, len(waves), batch_size)])


@torch.no_grad()
def torch_embed_audio(encoder: nn.Module, waves: np.ndarray) -> np.ndarray:
    return encoder.eval()(torch.from_numpy(waves.astype(np.float32))).numpy()


def check_audio_parity(encoder: nn.Module, path: Path, waves: np.ndarray, max_abs_diff: float = MAX_ABS_DIFF,
                       min_cosine: float = MIN_COSINE) -> ParityReport:
    """onnxruntime vs PyTorch on ``waves``, batched and the first 4 one at a time.

    Raises:
        ParityError: if the limits are exceeded.
    """
    reference = torch_embed_audio(encoder, waves)
    batched = onnx_embed(path, waves)
    single = np.concatenate([onnx_embed(path, waves[i:i + 1]) for i in range(min(4, len(waves)))])
    diff, cos = compare(reference, batched)
    diff1, cos1 = compare(reference[:len(single)], single)
    report = ParityReport(len(waves), (1, len(waves)), max(diff, diff1), min(cos, cos1), max_abs_diff, min_cosine)
    if not report.ok:
        raise ParityError(f"PARITY FAILED for {path}: onnxruntime vs PyTorch on {len(waves)} waveforms: max |diff| "
                          f"{report.max_abs_diff:.3g} (limit {max_abs_diff:g}), min cosine {report.min_cosine:.6f}",
                          report)
    return report


class _WaveReader(CalibrationDataReader):
    def __init__(self, waves: np.ndarray, batch_size: int = 32) -> None:
        self.waves, self.batch_size, self.position = waves.astype(np.float32), batch_size, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.waves):
            return None
        batch = self.waves[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return {INPUT_NAME: batch}

    def rewind(self) -> None:
        self.position = 0


def quantize_audio_int8(source: Path, target: Path, calibration: np.ndarray, meta: dict[str, Any]) -> Path:
    """int8 QDQ, per-channel, MinMax-calibrated, on ``Conv`` nodes only (the front end stays float)."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)  # its symbolic pass fails on STFT
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        try:
            quantize_static(str(prepared), str(quantized), _WaveReader(calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv"])
        finally:
            logging.getLogger().setLevel(level)
        model = onnx.load(quantized)
    save_model(_with_props(model, audio_props(meta, "int8")), target)
    return target


def real_waves(folder: str | None, count: int, meta: dict[str, Any], seed: int) -> np.ndarray:
    """``count`` waveforms of the model's length: centre crops of a folder's clips, or synthetic notes + noise.

    Raises:
        ValueError: if the folder holds no usable audio file.
    """
    from fedssl.audio.augment import centre_crops
    from fedssl.data.audio import load_audio_folder
    from fedssl.data.audio_corpus import PITCHES, TIMBRES, synth_note

    frontend = meta["frontend"]
    samples, rate = int(frontend["num_samples"]), int(frontend["sample_rate"])
    rng = np.random.default_rng(seed)
    if folder:
        clips = load_audio_folder(folder, rate, samples / rate, 0.0).clips
        return centre_crops(clips[np.sort(rng.choice(len(clips), min(count, len(clips)), replace=False))], samples)
    notes = [synth_note(TIMBRES[i % len(TIMBRES)], PITCHES[i % len(PITCHES)], samples / rate, rng, rate)
             for i in range(count)]
    waves = np.stack(notes) * rng.uniform(0.05, 0.9, (count, 1)) + rng.normal(0, 0.01, (count, samples))
    return waves.astype(np.float32)


def export_audio(encoder: nn.Module, meta: dict[str, Any], checkpoint: Path, output: Path, *, audio_dir: str | None,
                 int8: bool, parity_count: int = 64, calibration_count: int = 128, opset: int | None = None,
                 max_abs_diff: float = AUDIO_MAX_ABS_DIFF, min_cosine: float = MIN_COSINE) -> list[dict[str, Any]]:
    """Export, check, quantise and write sidecars; one summary row per file written.

    Raises:
        ParityError: if the fp32 model does not match PyTorch (nothing is written then).
    """
    waves = real_waves(audio_dir, parity_count, meta, seed=1)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
        staged = export_audio_encoder(encoder, meta, Path(tmp) / output.name, opset)
        parity = check_audio_parity(encoder, staged, waves, max_abs_diff, min_cosine)
        staged.replace(output)
    files = {"fp32": output}
    if int8:
        calibration = real_waves(audio_dir, calibration_count, meta, seed=2)
        files["int8"] = quantize_audio_int8(output, output.with_name(f"{output.stem}.int8{output.suffix}"),
                                            calibration, meta)
    reference, rows = torch_embed_audio(encoder, waves), []
    for precision, path in files.items():
        diff, cos = compare(reference, onnx_embed(path, waves))
        doc = {"model_file": path.name, "sha256": sha256_file(path), "source_checkpoint": str(checkpoint.resolve()),
               **{k[len(PREFIX):]: json.loads(v) for k, v in audio_props(meta, precision).items()},
               "vs_torch": {"waveforms": len(waves), "max_abs_diff": diff, "min_cosine": cos}}
        if precision == "fp32":
            doc["parity"] = parity.to_dict()
        atomic_write_text(sidecar_path(path), json.dumps(doc, indent=2) + "\n")
        rows.append({"precision": precision, "path": path, "mb": path.stat().st_size / 2**20, "max_abs_diff": diff,
                     "min_cosine": cos})
        print(f"  {str(path):<40} {precision}  {rows[-1]['mb']:5.2f} MB  vs torch: max|diff| {diff:.2e}  "
              f"min cos {cos:.6f}")
    return rows
