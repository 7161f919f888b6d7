"""Where a device's unlabeled data come from: its own ``data-dir``, or a simulated shard, per ``data.modality``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedssl.config import RunConfig
from fedssl.data.node_images import node_images
from fedssl.modality import MODALITIES


def node_data(cfg: RunConfig, node_config: Mapping[str, object]) -> np.ndarray:
    """This node's samples (images ``(N, C, H, W)`` uint8, audio clips ``(N, samples)`` float32).

    Raises:
        ValueError: if the node config has neither ``data-dir`` nor a valid ``partition-id``.
    """
    return MODALITIES.get(cfg.data.modality).node_data(cfg, node_config)


__all__ = ["node_data", "node_images"]
