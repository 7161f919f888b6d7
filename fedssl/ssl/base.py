"""What every SSL objective shares: a backbone that travels and local parts that don't."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

BACKBONE_PREFIX = "backbone."


class SSLModel(nn.Module):
    """A backbone plus the heads, targets and queues one SSL objective needs.

    By default only ``backbone.*`` entries of the state dict are sent to the server (``shared_state``;
    ``transport-scope = "model"`` adds the heads); the rest (``local_state``) stays on the device
    between rounds.
    """

    device_only_buffers: tuple[str, ...] = ()  # buffers that never leave the device (MoCo's queue)

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, view_a: Tensor, view_b: Tensor) -> Tensor:
        """Return the scalar loss for two augmented views of the same images."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """What the heads see: the backbone's ``ssl_features`` (its embedding unless it says otherwise)."""
        ssl_features = getattr(self.backbone, "ssl_features", None)
        return ssl_features(x) if ssl_features is not None else self.backbone(x)

    @torch.no_grad()
    def after_step(self) -> None:
        """Hook run after each optimiser step (EMA targets, queues)."""

    def backbone_state(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(BACKBONE_PREFIX)}

    def shared_state(self, scope: str = "backbone") -> dict[str, Tensor]:
        """What a reply carries (``transport-scope``): the backbone, or with ``"model"`` the trained heads too.

        Momentum targets (EMA copies) and queues stay on the device either way: they are a device's
        running memory of its own training, not weights to average.
        """
        if scope == "backbone":
            return self.backbone_state()
        targets = tuple(f"{name}." for name, module in self.named_modules() if isinstance(module, MomentumTarget))
        return {k: v for k, v in self.state_dict().items()
                if not (targets and k.startswith(targets)) and k not in self.device_only_buffers}

    def local_state(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith(BACKBONE_PREFIX)}


class MomentumTarget(nn.Module):
    """An EMA copy of some online modules (BYOL target, MoCo key encoder), never trained by SGD."""

    def __init__(self, *online: nn.Module) -> None:
        super().__init__()
        self.net = nn.Sequential(*[copy.deepcopy(m) for m in online])
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Sequential, momentum: float) -> None:
        """``target <- m * target + (1 - m) * online``; buffers (BN statistics) are copied."""
        for t, o in zip(self.net.parameters(), online.parameters(), strict=True):
            t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)
        for t, o in zip(self.net.buffers(), online.buffers(), strict=True):
            t.copy_(o)

    def forward(self, x: Tensor) -> Tensor:
        first, *rest = self.net
        ssl_features = getattr(first, "ssl_features", None)  # a backbone: the features its heads see
        x = ssl_features(x) if ssl_features is not None else first(x)
        for module in rest:
            x = module(x)
        return x
