"""Loss-weighted averaging and the FedVSSL mix of FedAvg, loss weighting and SWA.

[0] FedVSSL, 2022, arXiv:2207.01975
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from server_app.aggregation.base import Arrays, mix, weighted_mean


def loss_weights(losses: Sequence[float]) -> np.ndarray:
    """``exp(-loss_k)``, shifted by the smallest loss for numerical safety (the ratio is unchanged)."""
    losses = np.asarray(losses, dtype=np.float64)
    return np.exp(-(losses - losses.min()))


def loss_weighted(updates: Sequence[Mapping[str, np.ndarray]], num_examples: Sequence[float],
                  losses: Sequence[float], previous: Mapping[str, np.ndarray]) -> Arrays:
    """``sum_k exp(-L_k) x_k / sum_k exp(-L_k)``: clients that fit their data better count more."""
    return weighted_mean(updates, loss_weights(losses))


def fedvssl(updates: Sequence[Mapping[str, np.ndarray]], num_examples: Sequence[float],
            losses: Sequence[float], previous: Mapping[str, np.ndarray], alpha: float = 0.5,
            beta: float = 0.0) -> Arrays:
    """``beta * previous + (1 - beta) * (alpha * FedAvg + (1 - alpha) * loss_weighted)``.

    Unlike the public FedVSSL baseline (which concatenates the two lists so the
    loss term is dropped), the two averages are added, so ``alpha`` matters.
    """
    blended = mix(weighted_mean(updates, num_examples), weighted_mean(updates, loss_weights(losses)), alpha)
    return mix(previous, blended, beta) if beta > 0 else blended
