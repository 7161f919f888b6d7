"""Deliberately bad clients for tests and benchmarks (node config ``misbehave``).

They run the real training and then corrupt what they send, so the server's
filters meet real bad updates: a collapsed encoder, NaN weights, or weights
scaled far out of range.
"""

from __future__ import annotations

import torch
from torch import nn

MODES = ("", "collapse", "nan", "scale")
SPLIT_MODES = ("split-drop",)  # split mode only (client_app/split.py): full-mode training ignores them


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
def corrupt(backbone: nn.Module, mode: str) -> None:
    """Apply ``mode`` to a trained backbone in place.

    Raises:
        ValueError: for an unknown mode.
    """
    if mode == "collapse":
        collapse_encoder(backbone)
    elif mode == "nan":
        next(backbone.parameters()).view(-1)[0] = float("nan")
    elif mode == "scale":
        for p in backbone.parameters():
            p.mul_(100.0)
    elif mode and mode not in SPLIT_MODES:
        raise ValueError(f"node config 'misbehave' = {mode!r} is not one of {list(MODES + SPLIT_MODES)}")
