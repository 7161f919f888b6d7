"""Retrieval accuracy of an encoder, as PyTorch module or as ONNX file, on the same Fashion-MNIST images.

Gallery from the train split, queries from the test split (as the federation's
probes); both backends see the same uint8 pixels, so any difference is the
export's (or the quantisation's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from export.metadata import EncoderMetadata
from export.parity import torch_embed
from export.retrieve.encoder import OnnxEncoder
from export.retrieve.images import fit_array
from export.retrieve.search import knn_accuracy, top1_label_agreement
from fedssl.data.fashion_mnist import load_fashion_mnist


@dataclass(frozen=True)
class RetrievalTask:
    """uint8 images ``(N, C, H, W)`` at the model's size, with integer labels."""

    gallery: np.ndarray
    gallery_labels: np.ndarray
    queries: np.ndarray
    query_labels: np.ndarray

    @classmethod
    def fashion_mnist(cls, size: int, channels: int, gallery_size: int = 10000, query_size: int = 2000,
                      seed: int = 0) -> RetrievalTask:
        """A random train subset as gallery and a random test subset as queries (fixed by ``seed``)."""
        rng = np.random.default_rng(seed)
        xtr, ytr = load_fashion_mnist("train")
        xte, yte = load_fashion_mnist("test")
        g = np.sort(rng.choice(len(xtr), min(gallery_size, len(xtr)), replace=False))
        q = np.sort(rng.choice(len(xte), min(query_size, len(xte)), replace=False))
        return cls(fit_array(xtr[g], size, channels), ytr[g], fit_array(xte[q], size, channels), yte[q])


def retrieval_scores(gallery: np.ndarray, queries: np.ndarray, task: RetrievalTask) -> dict[str, float]:
    """``{"top1": nearest-neighbour label agreement, "knn": weighted kNN top-1 (k=200, t=0.1)}``."""
    return {"top1": top1_label_agreement(gallery, task.gallery_labels, queries, task.query_labels),
            "knn": knn_accuracy(gallery, task.gallery_labels, queries, task.query_labels)}


def evaluate_torch(encoder: nn.Module, meta: EncoderMetadata, task: RetrievalTask) -> dict[str, float]:
    return retrieval_scores(torch_embed(encoder, task.gallery, meta), torch_embed(encoder, task.queries, meta), task)


def embed_onnx(encoder: OnnxEncoder, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([encoder.embed(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def evaluate_onnx(model_path: str | Path, task: RetrievalTask, provider: str = "cpu") -> dict[str, float]:
    encoder = OnnxEncoder(model_path, provider)
    return retrieval_scores(embed_onnx(encoder, task.gallery), embed_onnx(encoder, task.queries), task)
