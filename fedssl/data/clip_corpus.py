"""A generated clip corpus (audio, video) as a device sees it: every clip with its manifest row, and shards.

What :mod:`fedssl.audio.data` and :mod:`fedssl.video.data` share: a file that does not decode drops
its row, a simulated device's shard is the train split partitioned over one label with
``data.partition`` (labels stay behind), and a node's ``data-dir`` wins over a shard.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from fedssl.config import RunConfig
from fedssl.data.partition import node_partition, partition


class ManifestRow(Protocol):
    """A manifest row: the clip's file (relative to the corpus folder) and its split; labels besides."""

    path: str
    split: str


Row = TypeVar("Row", bound=ManifestRow)


class Decoded(Protocol):
    """What a reader returns for a list of files: the clips of those it could decode, and their paths."""

    clips: np.ndarray
    paths: list[str]


@dataclass(frozen=True)
class Corpus(Generic[Row]):
    """Every clip of a generated corpus ``(N, ...)`` with its manifest row."""

    clips: np.ndarray
    rows: tuple[Row, ...]

    def select(self, split: str | None = None, **fields: Any) -> np.ndarray:
        """Indices of the rows of ``split`` (train/test; None: any) whose ``fields`` have these values."""
        return np.asarray([i for i, r in enumerate(self.rows)
                           if (split is None or r.split == split)
                           and all(getattr(r, k) == v for k, v in fields.items())], dtype=np.int64)


def decode_corpus(root: str, rows: Sequence[Row], decode: Callable[[list[Path]], Decoded]) -> Corpus[Row]:
    """The clips of the manifest's ``rows`` (paths relative to ``root``); a damaged file drops its row."""
    decoded = decode([Path(root) / r.path for r in rows])
    kept = set(decoded.paths)
    return Corpus(decoded.clips, tuple(r for r in rows if str(Path(root) / r.path) in kept))


def train_shard(cfg: RunConfig, corpus: Corpus[Row], label: Callable[[Row], object], partition_id: int,
                num_partitions: int) -> np.ndarray:
    """One simulated device's unlabeled clips: the train split partitioned over ``label(row)`` with
    ``data.partition`` (labels stay behind)."""
    train = corpus.select("train")
    labels = np.unique([label(corpus.rows[i]) for i in train], return_inverse=True)[1]
    shards = partition(labels, num_partitions, cfg.data.partition, alpha=cfg.data.alpha,
                       classes_per_client=cfg.data.classes_per_client, seed=cfg.seed)
    return corpus.clips[train[shards[partition_id]]]


def node_clips(node_config: Mapping[str, object], folder: Callable[[str], np.ndarray],
               shard: Callable[[int, int], np.ndarray], what: str) -> np.ndarray:
    """``data-dir`` in the node config wins (a device's own folder of ``what`` files); otherwise a corpus shard.

    Raises:
        ValueError: if the node config has neither ``data-dir`` nor a valid ``partition-id``.
    """
    data_dir = str(node_config.get("data-dir", "") or "")
    if data_dir:
        return folder(data_dir)
    pid, n = node_partition(node_config, f"a folder of {what} files", f"a shard of the generated {what} corpus")
    return shard(pid, n)
