"""Where a device's unlabeled audio clips come from: its own folder, or a shard of the generated corpus."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fedssl.config import AudioConfig, RunConfig
from fedssl.data.audio import load_audio_folder, load_clips
from fedssl.data.audio_corpus import Clip, read_manifest
from fedssl.data.clip_corpus import Corpus, decode_corpus, node_clips, train_shard

AudioCorpus = Corpus[Clip]  # clips (N, clip_samples); rows with kind (speech/sound) and split (train/test)


def corpus_dir(cfg: AudioConfig) -> Path:
    return Path(cfg.corpus_dir).expanduser()


@functools.lru_cache(maxsize=2)
def _load_corpus(root: str, sample_rate: int, clip_seconds: float, min_seconds: float) -> AudioCorpus:
    return decode_corpus(root, read_manifest(root), lambda paths: load_clips(
        paths, sample_rate, clip_seconds, min_seconds, max_clips_per_file=1))


def load_corpus(cfg: AudioConfig) -> AudioCorpus:
    """The corpus at ``audio.corpus-dir``, decoded once per process.

    Raises:
        FileNotFoundError: if there is no manifest there (the message names the script that makes one).
    """
    return _load_corpus(str(corpus_dir(cfg).resolve()), cfg.sample_rate, cfg.clip_seconds, cfg.min_seconds)


def corpus_shard(cfg: RunConfig, partition_id: int, num_partitions: int) -> np.ndarray:
    """One simulated device's unlabeled clips: the train split (speech and sounds), partitioned over
    speakers/players with ``data.partition`` (Dirichlet: each source's clips spread unevenly over devices)."""
    return train_shard(cfg, load_corpus(cfg.audio), lambda row: row.source, partition_id, num_partitions)


def node_audio(cfg: RunConfig, node_config: Mapping[str, object]) -> np.ndarray:
    """``data-dir`` in the node config wins (a device's microphone folder); otherwise a corpus shard.

    Raises:
        ValueError: if the node config has neither ``data-dir`` nor a valid ``partition-id``.
    """
    a = cfg.audio
    return node_clips(node_config, lambda data_dir: _folder(data_dir, a.sample_rate, a.clip_seconds, a.min_seconds),
                      lambda pid, n: corpus_shard(cfg, pid, n), "audio")


@functools.lru_cache(maxsize=4)
def _folder(data_dir: str, sample_rate: int, clip_seconds: float, min_seconds: float) -> np.ndarray:
    return load_audio_folder(data_dir, sample_rate, clip_seconds, min_seconds).clips
