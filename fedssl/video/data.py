"""Where a device's unlabeled clips come from: its own camera folder, or a shard of the generated corpus."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedssl.config import RunConfig, VideoConfig
from fedssl.data.clip_corpus import Corpus, decode_corpus, node_clips, train_shard
from fedssl.data.video import load_clips, load_video_folder
from fedssl.data.video_corpus import MOTIONS, VideoClip, read_manifest

VideoCorpus = Corpus[VideoClip]  # clips (N, frames, size, size) uint8; rows with motion, object and split


@functools.lru_cache(maxsize=2)
def _load_corpus(root: str, size: int, frames: int) -> VideoCorpus:
    return decode_corpus(root, read_manifest(root), lambda paths: load_clips(paths, size, frames,
                                                                             max_clips_per_file=1))


def load_corpus(cfg: VideoConfig) -> VideoCorpus:
    """The corpus at ``video.corpus-dir``, decoded once per process.

    Raises:
        FileNotFoundError: if there is no manifest there (the message names the script that makes one).
    """
    return _load_corpus(str(Path(cfg.corpus_dir).expanduser().resolve()), cfg.size, cfg.frames)


def corpus_shard(cfg: RunConfig, partition_id: int, num_partitions: int) -> np.ndarray:
    """One simulated device's unlabeled clips: the train split partitioned over *motion* labels with
    ``data.partition`` (``classes-per-client``, or Dirichlet): a few motions per device."""
    return train_shard(cfg, load_corpus(cfg.video), lambda row: MOTIONS.index(row.motion), partition_id,
                       num_partitions)


def node_video(cfg: RunConfig, node_config: Mapping[str, object]) -> np.ndarray:
    """``data-dir`` in the node config wins (a device's camera folder); otherwise a corpus shard.

    Raises:
        ValueError: if the node config has neither ``data-dir`` nor a valid ``partition-id``.
    """
    v = cfg.video
    return node_clips(node_config, lambda data_dir: _folder(data_dir, v.size, v.frames, v.max_clips_per_file),
                      lambda pid, n: corpus_shard(cfg, pid, n), "video")


@functools.lru_cache(maxsize=4)
def _folder(data_dir: str, size: int, frames: int, max_clips_per_file: int) -> np.ndarray:
    return load_video_folder(data_dir, size, frames, max_clips_per_file=max_clips_per_file).clips
