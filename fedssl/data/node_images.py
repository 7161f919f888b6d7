"""Where a device's unlabeled images come from: its own folder, or a simulated Fashion-MNIST partition."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from fedssl.config import RunConfig
from fedssl.data.decode import DEFAULT_MAX_PIXELS
from fedssl.data.fashion_mnist import fashion_mnist_shard
from fedssl.data.image_folder import load_image_folder
from fedssl.data.partition import node_partition


def node_images(cfg: RunConfig, node_config: Mapping[str, object]) -> np.ndarray:
    """``data-dir`` in the node config wins (a real device); otherwise this node's Fashion-MNIST shard.

    ``max-image-pixels`` (node config, default 50 M) skips larger image files before decoding them:
    a device's memory is the device's business, so it is a node setting, not a run setting.

    Raises:
        ValueError: if the node config has neither ``data-dir`` nor a valid ``partition-id``, or a bad
            ``max-image-pixels``.
    """
    data_dir = str(node_config.get("data-dir", "") or "")
    if data_dir:
        return _folder(data_dir, cfg.model.image_size, cfg.model.in_channels, _max_pixels(node_config))
    pid, n = node_partition(node_config, "a folder of images", "a Fashion-MNIST shard")
    return _shard(pid, n, cfg.data.partition, cfg.data.alpha, cfg.data.classes_per_client, cfg.seed)


def _max_pixels(node_config: Mapping[str, object]) -> int:
    value = node_config.get("max-image-pixels", DEFAULT_MAX_PIXELS)
    whole = isinstance(value, int | str) or isinstance(value, float) and value.is_integer()
    try:
        pixels = int(value) if whole and not isinstance(value, bool) else 0  # type: ignore[call-overload]
    except ValueError:
        pixels = 0
    if pixels < 1:
        raise ValueError(f"node config 'max-image-pixels' = {value!r} must be a whole number >= 1")
    return pixels


@functools.lru_cache(maxsize=4)
def _folder(data_dir: str, size: int, channels: int, max_pixels: int) -> np.ndarray:
    return load_image_folder(data_dir, size, channels, max_pixels=max_pixels).images


@functools.lru_cache(maxsize=4)
def _shard(pid: int, n: int, scheme: str, alpha: float, k: int, seed: int) -> np.ndarray:
    return fashion_mnist_shard(pid, n, scheme, alpha=alpha, classes_per_client=k, seed=seed)
