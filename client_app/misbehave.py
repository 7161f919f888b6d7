"""Deliberately bad clients for tests and benchmarks (node config ``misbehave``).

They run the real training and then corrupt what they send, so the server's
filters meet real bad updates: a collapsed encoder, NaN weights, or weights
scaled far out of range.
"""

from __future__ import annotations

import torch
from torch import nn

MODES = ("", "collapse", "nan", "scale")


@torch.no_grad()
def collapse_encoder(backbone: nn.Module) -> None:
    """Make every image map to the same embedding: zero the final linear map, keep a large constant bias.

    This is what a collapsed SSL encoder looks like from outside: one dominant direction for every input.
    """
    linears = [m for m in backbone.modules() if isinstance(m, nn.Linear)]
    if linears:
        linears[-1].weight.zero_()
        if linears[-1].bias is not None:
            linears[-1].bias.copy_(10.0 * torch.randn_like(linears[-1].bias))
    else:
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
    elif mode:
        raise ValueError(f"node config 'misbehave' = {mode!r} is not one of {list(MODES)}")
