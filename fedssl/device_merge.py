"""Device side (ClientApp): how a device merges the new global backbone with its own (FedU, FedEMA).

Only the backbone travels, so both rules act on it, using the device's backbone
from the end of its previous round (kept on the device).
[0] FedU, 2021, arXiv:2108.06492 (divergence-aware update with a threshold)
[1] FedEMA, 2022, arXiv:2204.04385 (EMA of global into local, auto-scaled lambda)
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor


def divergence(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """L2 distance between two state dicts over their floating-point entries."""
    total = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a if a[k].is_floating_point())
    return total ** 0.5


def fedu(local: Mapping[str, Tensor], global_: Mapping[str, Tensor], threshold: float) -> tuple[dict, bool]:
    """Adopt the global backbone only if it has not drifted more than ``threshold`` from ours.

    Returns (backbone to train from, whether the global one was adopted).
    """
    adopted = divergence(local, global_) < threshold
    return dict(global_ if adopted else local), adopted


def fedema_scale(local: Mapping[str, Tensor], global_: Mapping[str, Tensor], tau: float) -> float:
    """The auto-scaler ``lambda = tau / ||W_g - W_k||``, fixed at a device's first merge, so mu starts at tau."""
    d = divergence(local, global_)
    return tau / d if d > 0 else 1.0


def fedema(local: Mapping[str, Tensor], global_: Mapping[str, Tensor], scale: float) -> tuple[dict, float]:
    """``W_k <- mu * W_k + (1 - mu) * W_g`` with ``mu = min(scale * ||W_g - W_k||, 1)``.

    A device far from the global model keeps more of its own weights. Returns (merged, mu).
    """
    mu = min(scale * divergence(local, global_), 1.0)
    merged = {k: (mu * local[k] + (1 - mu) * global_[k]).to(global_[k].dtype) if global_[k].is_floating_point()
              else global_[k].clone() for k in global_}
    return merged, mu

