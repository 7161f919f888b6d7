"""The starting point of a split run, and the whole encoder put back together for probes and export."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from fedssl.config import RunConfig
from fedssl.models.encoders import build_encoder
from fedssl.split.cut import join_states, split_encoder
from fedssl.split.device import MOMENTUM, ONLINE
from fedssl.split.server import SplitServer
from fedssl.ssl.base import BACKBONE_PREFIX
from fedssl.state import to_numpy


def build_split(cfg: RunConfig) -> tuple[dict[str, np.ndarray], SplitServer]:
    """A seeded encoder cut in two: the stems' starting state (``online.*`` and ``momentum.*``, equal)
    and the server with the trunk."""
    torch.manual_seed(cfg.seed)
    stem, trunk = split_encoder(build_encoder(cfg.model), cfg.model, cfg.split.cut)
    state = stem.state_dict()
    stems = to_numpy({ONLINE + k: v for k, v in state.items()} | {MOMENTUM + k: v for k, v in state.items()})
    return stems, SplitServer(trunk, cfg.ssl, cfg.split, cfg.train, seed=cfg.seed)


def online_stem(stems: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    """The online stem's state dict (encoder keys) from the stems as they travel."""
    return {k[len(ONLINE):]: torch.from_numpy(np.asarray(v, dtype=v.dtype if v.dtype != np.float16 else np.float32))
            for k, v in stems.items() if k.startswith(ONLINE)}


def encoder_arrays(stems: Mapping[str, np.ndarray], server: SplitServer) -> dict[str, np.ndarray]:
    """The whole encoder (averaged online stem + online trunk) as ``backbone.*`` arrays, the currency
    of ``server_app/outputs.py`` and the probes in full mode."""
    whole = join_states(online_stem(stems), server.trunk.state_dict())
    return to_numpy({BACKBONE_PREFIX + k: v for k, v in whole.items()})
