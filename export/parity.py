"""Does the exported file compute what the PyTorch encoder computes? Checked on real images, loudly.

Both sides see the same uint8 images through the same preprocessing; the ONNX
side runs once image by image and once in one batch, which also proves the
dynamic batch axis.
"""

from __future__ import annotations

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
    reference = torch_embed(encoder, images, meta)
    onnx_encoder = OnnxEncoder(model_path, provider="cpu")
    batched = onnx_encoder.embed(images)
    one_by_one = np.concatenate([onnx_encoder.embed(images[i:i + 1]) for i in range(min(single, len(images)))])
    diff, cos = compare(reference, batched)
    diff1, cos1 = compare(reference[:len(one_by_one)], one_by_one)
    report = ParityReport(len(images), (1, len(images)), max(diff, diff1), min(cos, cos1), max_abs_diff, min_cosine)
    if not report.ok:
        raise ParityError(
            f"PARITY FAILED for {model_path}: onnxruntime vs PyTorch on {len(images)} real images: "
            f"max |diff| {report.max_abs_diff:.3g} (limit {max_abs_diff:g}), "
            f"min cosine {report.min_cosine:.6f} (limit {min_cosine:g})", report)
    return report
