"""Does the exported file compute what the PyTorch encoder computes? Checked on real inputs, loudly.

Both sides see the same inputs (uint8 images through the same preprocessing; the float waveforms
or clips an audio or video model takes as they are); the ONNX side runs once input by input and
once in one batch, which also proves the dynamic batch axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.metadata import EncoderMetadata
from export.retrieve.encoder import OnnxEncoder
from export.retrieve.images import normalize

MAX_ABS_DIFF = 1e-4
MIN_COSINE = 0.9999


class ParityError(RuntimeError):
    """onnxruntime's embeddings differ from PyTorch's beyond the tolerance; ``report`` has the figures."""

    def __init__(self, message: str, report: ParityReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ParityReport:
    images: int
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    min_cosine: float
    max_abs_diff_limit: float
    min_cosine_limit: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.max_abs_diff_limit and self.min_cosine >= self.min_cosine_limit

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


@torch.no_grad()
def torch_embed(encoder: nn.Module, images: np.ndarray, meta: EncoderMetadata, batch_size: int = 256) -> np.ndarray:
    """PyTorch embeddings ``(N, D)`` of uint8 images ``(N, C, H, W)``, with the device's preprocessing."""
    encoder.eval()
    return np.concatenate([encoder(torch.from_numpy(normalize(images[i:i + batch_size], meta.mean, meta.std))).numpy()
                           for i in range(0, len(images), batch_size)])


def compare(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, min row cosine) of two embedding matrices ``(N, D)``."""
    a, b = reference.astype(np.float64), candidate.astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return float(np.abs(a - b).max()), float(cos.min())


def check_parity(encoder: nn.Module, model_path: str | Path, images: np.ndarray, meta: EncoderMetadata,
                 max_abs_diff: float = MAX_ABS_DIFF, min_cosine: float = MIN_COSINE,
                 single: int = 8) -> ParityReport:
    """Compare the ONNX model at ``model_path`` (onnxruntime, CPU) with ``encoder`` on ``images``.

    The first ``single`` images also run one at a time (batch 1) against the batched run.

    Raises:
        ParityError: if max |torch - onnx| > ``max_abs_diff`` or some cosine < ``min_cosine``.
    """
    onnx_encoder = OnnxEncoder(model_path, provider="cpu")
    return judge(torch_embed(encoder, images, meta), onnx_encoder.embed, images, f"{model_path}", "real images",
                 max_abs_diff, min_cosine, single)


@torch.no_grad()
def torch_embed_array(encoder: nn.Module, inputs: np.ndarray) -> np.ndarray:
    """PyTorch embeddings ``(N, D)`` of float inputs the model takes as they are (waveforms, clips)."""
    return encoder.eval()(torch.from_numpy(inputs.astype(np.float32))).numpy()


def onnx_embed(path: str | Path, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """onnxruntime (CPU) embeddings ``(N, D)`` of float inputs fed as they are to the model's one input."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i:i + batch_size].astype(np.float32)})[0]
                           for i in range(0, len(inputs), batch_size)])


def check_array_parity(encoder: nn.Module, path: Path, inputs: np.ndarray, noun: str,
                       max_abs_diff: float = MAX_ABS_DIFF, min_cosine: float = MIN_COSINE, batch_size: int = 64,
                       single: int = 4) -> ParityReport:
    """onnxruntime vs PyTorch on float ``inputs`` (``noun``: what they are), batched and the first ``single``
    one at a time.

    Raises:
        ParityError: if the limits are exceeded.
    """
    return judge(torch_embed_array(encoder, inputs), lambda x: onnx_embed(path, x, batch_size), inputs, f"{path}",
                 noun, max_abs_diff, min_cosine, single)


def judge(reference: np.ndarray, embed: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, model: str,
          noun: str, max_abs_diff: float, min_cosine: float, single: int) -> ParityReport:
    """The report of ``embed`` (onnxruntime) against ``reference`` (PyTorch) on ``inputs``, batched and the first
    ``single`` one at a time.

    Raises:
        ParityError: if max |torch - onnx| > ``max_abs_diff`` or some cosine < ``min_cosine``.
    """
    batched = embed(inputs)
    one_by_one = np.concatenate([embed(inputs[i:i + 1]) for i in range(min(single, len(inputs)))])
    diff, cos = compare(reference, batched)
    diff1, cos1 = compare(reference[:len(one_by_one)], one_by_one)
    report = ParityReport(len(inputs), (1, len(inputs)), max(diff, diff1), min(cos, cos1), max_abs_diff, min_cosine)
    if not report.ok:
        raise ParityError(
            f"PARITY FAILED for {model}: onnxruntime vs PyTorch on {len(inputs)} {noun}: "
            f"max |diff| {report.max_abs_diff:.3g} (limit {max_abs_diff:g}), "
            f"min cosine {report.min_cosine:.6f} (limit {min_cosine:g})", report)
    return report
