"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (idx gz files, no download)."""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = (0.2860,), (0.3530,)
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DatasetMissingError(FileNotFoundError):
    """The Debian data set is not installed; the message says how to install it."""


def dataset_dir() -> Path:
    return Path(os.environ.get("FEDSSL_FASHION_MNIST_DIR", DEFAULT_DIR))


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {array.size} bytes")
    return array.reshape(shape)


@functools.lru_cache(maxsize=2)
def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 1, 28, 28)`` uint8 and labels ``(N,)`` int64 of one split.

    Raises:
        ValueError: for a split other than ``train``/``test``.
        DatasetMissingError: when the Debian package is not installed.
    """
    if split not in _FILES:
        raise ValueError(f"split = {split!r} is not one of {list(_FILES)}")
    root = dataset_dir()
    paths = [root / name for name in _FILES[split]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetMissingError(
            f"Fashion-MNIST not found ({', '.join(missing)}). Install it with "
            "'sudo apt-get install dataset-fashion-mnist' or set FEDSSL_FASHION_MNIST_DIR."
        )
    images = _read_idx(paths[0])[:, None, :, :]  # (N, 1, 28, 28)
    labels = _read_idx(paths[1]).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{root}: {len(images)} images but {len(labels)} labels")
    return images, labels


def fashion_mnist_shard(partition_id: int, num_partitions: int, scheme: str, *, alpha: float,
                        classes_per_client: int, seed: int) -> np.ndarray:
    """One simulated device's unlabeled training images: shard ``partition_id`` of ``partition(...)``.

    The ClientApp and the local-only baseline both call this, so a client alone and the same
    client in a federation train on exactly the same images.
    """
    from fedssl.data.partition import partition

    images, labels = load_fashion_mnist("train")
    shards = partition(labels, num_partitions, scheme, alpha=alpha, classes_per_client=classes_per_client, seed=seed)
    return images[shards[partition_id]]  # labels stay behind: never used for training
