"""L-DAWA: layer-wise divergence-aware weight aggregation.

Each client's layer is scaled by its cosine similarity with the previous
global layer (clipped to at most 1), so a layer that drifted away counts less:
``g^l = sum_k (n_k / N) * min(1, cos(x_k^l, g_prev^l)) * x_k^l``.
[0] L-DAWA, 2023, arXiv:2307.07393
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from server_app.aggregation.base import Arrays, is_float


def layer_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened layers, clipped to at most 1 (0 for a zero layer)."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(min(1.0, a @ b / denom)) if denom > 0 else 0.0


def ldawa(updates: Sequence[Mapping[str, np.ndarray]], num_examples: Sequence[float],
          losses: Sequence[float], previous: Mapping[str, np.ndarray]) -> Arrays:
    n = np.asarray(num_examples, dtype=np.float64)
    share = n / n.sum()
    out: Arrays = {}
    for key, ref in previous.items():
        if not is_float(ref):
            out[key] = np.array(np.max([u[key] for u in updates], axis=0), dtype=ref.dtype)
            continue
        acc = np.zeros(ref.shape, dtype=np.float64)
        for s, update in zip(share, updates):
            layer = update[key]
            acc += s * layer_cosine(layer, ref) * layer
        out[key] = acc.astype(np.float32)
    return out
