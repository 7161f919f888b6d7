"""Where a device's unlabeled audio clips come from: its own folder, or a shard of the generated corpus."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedssl.config import AudioConfig, RunConfig
from fedssl.data.audio import load_audio_folder, load_clips
from fedssl.data.audio_corpus import Clip, read_manifest
from fedssl.data.partition import node_partition


@dataclass(frozen=True)
class Corpus:
    """Every clip of a generated corpus ``(N, clip_samples)`` with its manifest row."""

    clips: np.ndarray
    rows: tuple[Clip, ...]

    def select(self, kind: str | None = None, split: str | None = None) -> np.ndarray:
        """Indices of the rows of ``kind`` (speech/sound) and ``split`` (train/test); None: any."""
        return np.asarray([i for i, r in enumerate(self.rows)
                           if (kind is None or r.kind == kind) and (split is None or r.split == split)], dtype=np.int64)


def corpus_dir(cfg: AudioConfig) -> Path:
    return Path(cfg.corpus_dir).expanduser()


@functools.lru_cache(maxsize=2)
def _load_corpus(root: str, sample_rate: int, clip_seconds: float, min_seconds: float) -> Corpus:
    rows = read_manifest(root)
    audio = load_clips([Path(root) / r.path for r in rows], sample_rate, clip_seconds, min_seconds,
                       max_clips_per_file=1)
    kept = set(audio.paths)
    rows = tuple(r for r in rows if str(Path(root) / r.path) in kept)  # a damaged file drops its row
    return Corpus(audio.clips, rows)


def load_corpus(cfg: AudioConfig) -> Corpus:
    """The corpus at ``audio.corpus-dir``, decoded once per process.

    Raises:
        FileNotFoundError: if there is no manifest there (the message names the script that makes one).
    """
    return _load_corpus(str(corpus_dir(cfg).resolve()), cfg.sample_rate, cfg.clip_seconds, cfg.min_seconds)


def corpus_shard(cfg: RunConfig, partition_id: int, num_partitions: int) -> np.ndarray:
    """One simulated device's unlabeled clips: the train split (speech and sounds), partitioned over
    speakers/players with ``data.partition`` (Dirichlet: each source's clips spread unevenly over devices)."""
    from fedssl.data.partition import partition

    corpus = load_corpus(cfg.audio)
    train = corpus.select(split="train")
    sources = np.unique([corpus.rows[i].source for i in train], return_inverse=True)[1]
    shards = partition(sources, num_partitions, cfg.data.partition, alpha=cfg.data.alpha,
                       classes_per_client=cfg.data.classes_per_client, seed=cfg.seed)
    return corpus.clips[train[shards[partition_id]]]  # labels stay behind


def node_audio(cfg: RunConfig, node_config: Mapping[str, object]) -> np.ndarray:
    """``data-dir`` in the node config wins (a device's microphone folder); otherwise a corpus shard.

    Raises:
        ValueError: if the node config has neither ``data-dir`` nor a valid ``partition-id``.
    """
    data_dir = str(node_config.get("data-dir", "") or "")
    a = cfg.audio
    if data_dir:
        return _folder(data_dir, a.sample_rate, a.clip_seconds, a.min_seconds)
    pid, n = node_partition(node_config, "a folder of audio files", "a shard of the generated audio corpus")
    return corpus_shard(cfg, pid, n)


@functools.lru_cache(maxsize=4)
def _folder(data_dir: str, sample_rate: int, clip_seconds: float, min_seconds: float) -> np.ndarray:
    return load_audio_folder(data_dir, sample_rate, clip_seconds, min_seconds).clips
