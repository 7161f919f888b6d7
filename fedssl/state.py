"""State-dict helpers: backbone-only NumPy dicts, the currency of a federation."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from fedssl.ssl.base import BACKBONE_PREFIX, SSLModel


def to_numpy(state: Mapping[str, Tensor], dtype: str = "float32") -> dict[str, np.ndarray]:
    """Tensors -> arrays; floating tensors cast to ``dtype`` (``float16`` halves transport)."""
    out = {}
    for key, value in state.items():
        array = value.detach().cpu().numpy()
        out[key] = array.astype(dtype) if np.issubdtype(array.dtype, np.floating) else array.copy()
    return out


def to_torch(arrays: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    """Arrays -> tensors; half-precision transport is widened back to float32."""
    out = {}
    for key, value in arrays.items():
        array = value.astype(np.float32) if value.dtype == np.float16 else value
        if not array.flags.writeable:  # a view of a reply's bytes: torch wants memory it may write
            array = array.copy()
        out[key] = torch.from_numpy(np.ascontiguousarray(array))
    return out


def shared_arrays(model: SSLModel, scope: str = "backbone", dtype: str = "float32") -> dict[str, np.ndarray]:
    """What travels under ``transport-scope`` (``SSLModel.shared_state``), as NumPy arrays."""
    return to_numpy(model.shared_state(scope), dtype)


def backbone_arrays(model: SSLModel, dtype: str = "float32") -> dict[str, np.ndarray]:
    """The ``backbone.*`` entries of a model's state dict, as NumPy arrays (the default transport scope)."""
    return shared_arrays(model, "backbone", dtype)


def load_heads(model: SSLModel, state: Mapping[str, Tensor]) -> None:
    """Load the heads of a global model that travels whole (``transport-scope = "model"``).

    The non-backbone keys must be exactly the heads this model shares: a global built for another
    method or scope is an error, never a silent partial load.
    """
    heads = {k: v for k, v in state.items() if not k.startswith(BACKBONE_PREFIX)}
    expected = set(model.shared_state("model")) - set(model.backbone_state())
    if set(heads) != expected:
        missing, extra = sorted(expected - set(heads)), sorted(set(heads) - expected)
        raise ValueError(f"the global model's heads do not match this device's SSL model: missing {missing[:5]}, "
                         f"unexpected {extra[:5]} (is 'transport-scope' the same on server and device?)")
    model.load_state_dict(heads, strict=False)


def strip_prefix(state: Mapping[str, Tensor], prefix: str = BACKBONE_PREFIX) -> dict[str, Tensor]:
    """``backbone.fc.weight`` -> ``fc.weight``, to load into a bare encoder."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_backbone(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Load backbone arrays into ``model.backbone``; every key must match (``strict``)."""
    model.backbone.load_state_dict(strip_prefix(to_torch(arrays)), strict=True)

