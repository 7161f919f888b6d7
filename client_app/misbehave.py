"""Deliberately bad clients for tests and benchmarks (node config ``misbehave``).

They run the real training and then corrupt what they send, so the server's
filters meet real bad updates: a collapsed encoder, NaN weights, or weights
scaled far out of range. Two kinds lie in their metrics instead: ``inflate``
sends an honest update but claims 10^12 examples (under FedAvg it would become
the global model); ``pretend`` sends a collapsed encoder (blind: its first layer zeroed, a step as short
as an honest one) with the collapse figures its honest model had: only the server's own
measurement can catch it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fedssl import reply

MODES = ("", "collapse", "nan", "scale", "inflate", "pretend")
SPLIT_MODES = ("split-drop",)  # split mode only (client_app/split.py): full-mode training ignores them
LYING = ("inflate", "pretend")  # modes whose metrics are false
INFLATED_EXAMPLES = 1e12


@torch.no_grad()
def collapse_encoder(backbone: nn.Module) -> None:
    """Make every image map to the same embedding, the way SSL encoders really collapse: dead ReLUs.

    Every BatchNorm's shift goes strongly negative, so each ReLU after it outputs 0 and the
    embedding is the final layer's bias alone. Averaged into a global model unfiltered, these
    shifts kill units for every client.
    """
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        if bn.bias is not None:  # a standardising BatchNorm has no shift of its own
            bn.bias.fill_(-10.0)
    if not norms:
        for p in backbone.parameters():
            p.zero_()


@torch.no_grad()
def blind_encoder(backbone: nn.Module) -> None:
    """Zero the first layer's weights: the encoder no longer sees its input, so every image gets the same
    embedding, with a step no longer than an honest one (norm screening cannot tell it apart)."""
    next(p for p in backbone.parameters() if p.dim() > 1).zero_()


@torch.no_grad()
def corrupt(backbone: nn.Module, mode: str) -> None:
    """Apply ``mode`` to a trained backbone in place.

    Raises:
        ValueError: for an unknown mode.
    """
    if mode == "collapse":
        collapse_encoder(backbone)
    elif mode == "pretend":
        blind_encoder(backbone)
    elif mode == "nan":
        next(backbone.parameters()).view(-1)[0] = float("nan")
    elif mode == "scale":
        for p in backbone.parameters():
            p.mul_(100.0)
    elif mode and mode not in MODES + SPLIT_MODES:
        raise ValueError(f"node config 'misbehave' = {mode!r} is not one of {list(MODES + SPLIT_MODES)}")


def falsify(metrics: Mapping[str, float], mode: str, honest: tuple[float, float]) -> dict[str, float]:
    """The metrics a lying device sends: ``honest`` is ``(z_std, rankme)`` of its model before it was corrupted."""
    out = dict(metrics)
    if mode == "inflate":
        out[reply.NUM_EXAMPLES] = INFLATED_EXAMPLES
    elif mode == "pretend":
        out[reply.Z_STD], out[reply.RANKME] = honest
    return out
