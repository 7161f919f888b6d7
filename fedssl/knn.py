"""Weighted kNN and retrieval top-k accuracy: how well do embeddings group items by class without training?

[0] Unsupervised Feature Learning via Non-Parametric Instance Discrimination, 2018, arXiv:1805.01978
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def knn_predict(gallery: Tensor, gallery_labels: Tensor, queries: Tensor, num_classes: int,
                k: int = 200, t: float = 0.1, chunk: int = 1024) -> Tensor:
    """Predicted class of each query: votes of the ``k`` most cosine-similar gallery items, weighted exp(sim/t).

    Shape: gallery (G, dim), gallery_labels (G,), queries (Q, dim) -> (Q,)
    """
    gallery = F.normalize(gallery.float(), dim=1)
    k = min(k, gallery.shape[0])
    preds = []
    for q in F.normalize(queries.float(), dim=1).split(chunk):
        sim, idx = (q @ gallery.T).topk(k, dim=1)  # (chunk, k)
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, gallery_labels[idx], (sim / t).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_top1(gallery: Tensor, gallery_labels: Tensor, queries: Tensor, query_labels: Tensor,
             k: int = 200, t: float = 0.1) -> float:
    """Fraction of queries whose kNN vote matches their label."""
    num_classes = int(max(gallery_labels.max(), query_labels.max())) + 1
    preds = knn_predict(gallery, gallery_labels, queries, num_classes, k, t)
    return float((preds == query_labels).float().mean())


@torch.no_grad()
def retrieval_top_k(gallery: Tensor, gallery_labels: Tensor, queries: Tensor, query_labels: Tensor, k: int = 5,
                    chunk: int = 1024) -> float:
    """Fraction of queries with at least one of their ``k`` most cosine-similar gallery items in their class.

    Retrieval top-k (recall@k) as FedVSSL and CtP evaluate clip retrieval: exact cosine of the embeddings as
    given (no centring), a query is a hit if any of its ``k`` nearest gallery items has its label.
    ``k`` is capped at the gallery size; top-1 is the nearest neighbour's label agreement.

    Shape: gallery (G, dim), gallery_labels (G,), queries (Q, dim), query_labels (Q,) -> accuracy

    Raises:
        ValueError: if ``k < 1`` or the gallery is empty.
    """
    if k < 1:
        raise ValueError(f"retrieval k = {k} must be >= 1")
    if gallery.shape[0] == 0:
        raise ValueError("retrieval needs a non-empty gallery")
    gallery = F.normalize(gallery.float(), dim=1)
    k = min(k, gallery.shape[0])
    hits = []
    for q, labels in zip(F.normalize(queries.float(), dim=1).split(chunk), query_labels.split(chunk), strict=True):
        idx = (q @ gallery.T).topk(k, dim=1).indices  # (chunk, k)
        hits.append((gallery_labels[idx] == labels[:, None]).any(dim=1))
    return float(torch.cat(hits).float().mean())


@torch.no_grad()
def embed(backbone: nn.Module, images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
          channels: int, batch_size: int = 1024) -> Tensor:
    """Embeddings ``(N, dim)`` of uint8 images ``(N, C, H, W)`` in eval mode, normalised as in training."""
    was_training = backbone.training
    backbone.eval()
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size]).float() / 255.0
        if x.shape[1] != channels:
            x = x.expand(-1, channels, -1, -1)  # grey probe on an RGB model
        out.append(backbone((x - m) / s))
    backbone.train(was_training)
    return torch.cat(out)
