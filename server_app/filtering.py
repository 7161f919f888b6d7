"""The collapse filter: leave out clients whose embeddings have collapsed before they poison the model."""

from __future__ import annotations

from fedssl import reply
from fedssl.config import FilterConfig
from server_app.updates import COLLAPSE, RejectedUpdate


def check_collapse(metrics: dict[str, float], cfg: FilterConfig, embedding_dim: int) -> None:
    """Reject a reply whose ``z_std`` or ``rankme / dim`` is below the configured floor.

    Raises:
        RejectedUpdate: with reason ``collapse`` and the offending figure.
    """
    if not cfg.enabled:
        return
    if metrics[reply.Z_STD] < cfg.min_z_std:
        raise RejectedUpdate(COLLAPSE, f"z_std {metrics[reply.Z_STD]:.3f} < {cfg.min_z_std}")
    ratio = metrics[reply.RANKME] / embedding_dim
    if ratio < cfg.min_rankme_ratio:
        raise RejectedUpdate(COLLAPSE, f"rankme/dim {ratio:.3f} < {cfg.min_rankme_ratio}")
