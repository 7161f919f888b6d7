"""Cosine top-k search over an embedding gallery, and the two retrieval accuracies we report (numpy only).

- top-1 label agreement: the label of the single most similar gallery item equals the query's.
- weighted kNN top-1: votes of the ``k`` most similar items weighted ``exp(sim / t)``, as the
  federation's probes score encoders (fedssl/knn.py, [0] Wu et al., 2018, arXiv:1805.01978).
"""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length, as float32. Shape: (N, dim) -> (N, dim)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, dim), got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def top_k(queries: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar gallery rows per query, best first.

    Both inputs must already be unit rows (:func:`l2_normalize`); ``k`` is capped at the gallery size.

    Shape: queries (Q, dim), gallery (G, dim) -> scores (Q, k) float32, indices (Q, k) int64

    Raises:
        ValueError: if ``k < 1``, the gallery is empty or the dimensions differ.
    """
    if k < 1:
        raise ValueError(f"k = {k} must be >= 1")
    if len(gallery) == 0:
        raise ValueError("the gallery is empty")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(f"query dim {queries.shape[1]} != gallery dim {gallery.shape[1]}")
    k = min(k, len(gallery))
    scores, indices = [], []
    for start in range(0, len(queries), chunk):
        sim = queries[start:start + chunk] @ gallery.T  # (chunk, G)
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else np.tile(
            np.arange(sim.shape[1]), (len(sim), 1))
        part = np.take_along_axis(sim, idx, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        indices.append(np.take_along_axis(idx, order, axis=1))
        scores.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(scores), np.concatenate(indices).astype(np.int64)


def top1_label_agreement(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray,
                         query_labels: np.ndarray) -> float:
    """Fraction of queries whose nearest gallery item (cosine) has the query's label; chance = 1/classes."""
    _, idx = top_k(l2_normalize(queries), l2_normalize(gallery), 1)
    return float(np.mean(np.asarray(gallery_labels)[idx[:, 0]] == np.asarray(query_labels)))


def knn_accuracy(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray, query_labels: np.ndarray,
                 k: int = 200, t: float = 0.1) -> float:
    """Weighted kNN top-1 (integer labels ``0..C-1``), the numpy twin of ``fedssl.knn.knn_top1``."""
    gallery_labels, query_labels = np.asarray(gallery_labels), np.asarray(query_labels)
    num_classes = int(max(gallery_labels.max(), query_labels.max())) + 1
    sim, idx = top_k(l2_normalize(queries), l2_normalize(gallery), k)
    votes = np.zeros((len(queries), num_classes), dtype=np.float64)
    np.add.at(votes, (np.arange(len(queries))[:, None], gallery_labels[idx]), np.exp(sim.astype(np.float64) / t))
    return float(np.mean(votes.argmax(axis=1) == query_labels))
