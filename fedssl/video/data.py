"""Where a device's unlabeled clips come from: its own camera folder, or a shard of the generated corpus."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedssl.config import RunConfig, VideoConfig
from fedssl.data.partition import node_partition
from fedssl.data.video import load_clips, load_video_folder
from fedssl.data.video_corpus import MOTIONS, VideoClip, read_manifest


@dataclass(frozen=True)
class Corpus:
    """Every clip of a generated corpus ``(N, frames, size, size)`` uint8 with its manifest row."""

    clips: np.ndarray
    rows: tuple[VideoClip, ...]

    def select(self, split: str | None = None) -> np.ndarray:
        """Indices of the rows of ``split`` (train/test); None: all."""
        return np.asarray([i for i, r in enumerate(self.rows) if split is None or r.split == split], dtype=np.int64)


@functools.lru_cache(maxsize=2)
def _load_corpus(root: str, size: int, frames: int) -> Corpus:
    rows = read_manifest(root)
    video = load_clips([Path(root) / r.path for r in rows], size, frames, max_clips_per_file=1)
    kept = set(video.paths)
    rows = tuple(r for r in rows if str(Path(root) / r.path) in kept)  # a damaged file drops its row
    return Corpus(video.clips, rows)


def load_corpus(cfg: VideoConfig) -> Corpus:
    """The corpus at ``video.corpus-dir``, decoded once per process.

    Raises:
        FileNotFoundError: if there is no manifest there (the message names the script that makes one).
    """
    return _load_corpus(str(Path(cfg.corpus_dir).expanduser().resolve()), cfg.size, cfg.frames)


def corpus_shard(cfg: RunConfig, partition_id: int, num_partitions: int) -> np.ndarray:
    """One simulated device's unlabeled clips: the train split partitioned over *motion* labels with
    ``data.partition`` (``classes-per-client``, or Dirichlet): a few motions per device."""
    from fedssl.data.partition import partition

    corpus = load_corpus(cfg.video)
    train = corpus.select("train")
    motions = np.asarray([MOTIONS.index(corpus.rows[i].motion) for i in train])
    shards = partition(motions, num_partitions, cfg.data.partition, alpha=cfg.data.alpha,
                       classes_per_client=cfg.data.classes_per_client, seed=cfg.seed)
    return corpus.clips[train[shards[partition_id]]]  # labels stay behind


def node_video(cfg: RunConfig, node_config: Mapping[str, object]) -> np.ndarray:
    """``data-dir`` in the node config wins (a device's camera folder); otherwise a corpus shard.

    Raises:
        ValueError: if the node config has neither ``data-dir`` nor a valid ``partition-id``.
    """
    data_dir = str(node_config.get("data-dir", "") or "")
    v = cfg.video
    if data_dir:
        return _folder(data_dir, v.size, v.frames, v.max_clips_per_file)
    pid, n = node_partition(node_config, "a folder of video files", "a shard of the generated video corpus")
    return corpus_shard(cfg, pid, n)


@functools.lru_cache(maxsize=4)
def _folder(data_dir: str, size: int, frames: int, max_clips_per_file: int) -> np.ndarray:
    return load_video_folder(data_dir, size, frames, max_clips_per_file=max_clips_per_file).clips
