"""Audio probe tasks (FASSL's idea: evaluate every round on several downstream tasks, keep the best model per task).

- ``speech-words``: which of 35 words (semantic); gallery: train-split speakers, queries: held-out ones.
- ``sound-pitch``: which of 12 pitches, across 8 timbres (non-semantic).
- ``sound-timbre``: which of 8 instrument-like timbres, across pitches (non-semantic).

Scores are the image probes' (weighted kNN, linear probe; :func:`fedssl.probe.score_embeddings`) on
embeddings of the centre crop of each clip. The raw baseline is the flattened log-mel spectrogram
(the encoder's own front end), the audio counterpart of raw pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from fedssl.audio.augment import centre_crops
from fedssl.audio.data import AudioCorpus, load_corpus
from fedssl.clip_probe import calibrate_on_clips, draw_task, embed_clips, load_corpus_tasks
from fedssl.config import RunConfig
from fedssl.models.frontend import LogMel
from fedssl.probe import ProbeScores, ProbeTask, score_embeddings
from fedssl.registry import Registry

# loader(run config, corpus, rng) -> the task's gallery and queries (float32 waveforms (N, crop samples))
AudioTaskLoader = Callable[[RunConfig, AudioCorpus, np.random.Generator], ProbeTask]
AUDIO_TASKS: Registry[AudioTaskLoader] = Registry("eval.tasks")


def _task(name: str, kind: str, label: str) -> AudioTaskLoader:
    def load(cfg: RunConfig, corpus: AudioCorpus, rng: np.random.Generator) -> ProbeTask:
        crop = int(round(cfg.audio.crop_seconds * cfg.audio.sample_rate))
        return draw_task(name, corpus.clips, [getattr(r, label) for r in corpus.rows],
                         {split: corpus.select(split, kind=kind) for split in ("train", "test")},
                         {"train": cfg.eval.gallery_size, "test": cfg.eval.query_size}, rng,
                         lambda clips: centre_crops(clips, crop),
                         f"the corpus at {cfg.audio.corpus_dir} has no {kind}/{{split}} clips "
                         "(made without espeak-ng?)")
    return load


AUDIO_TASKS.add("speech-words", _task("speech-words", "speech", "word"))
AUDIO_TASKS.add("sound-pitch", _task("sound-pitch", "sound", "pitch"))
AUDIO_TASKS.add("sound-timbre", _task("sound-timbre", "sound", "timbre"))
DEFAULT_AUDIO_TASKS = ("speech-words", "sound-pitch", "sound-timbre")


def load_audio_tasks(cfg: RunConfig) -> list[ProbeTask]:
    """The tasks named in ``eval.tasks``, drawn from the corpus with one generator seeded by ``seed``."""
    return load_corpus_tasks(AUDIO_TASKS, cfg, lambda: load_corpus(cfg.audio))


def as_input(waves: np.ndarray) -> Tensor:
    """float32 waveforms -> the encoder's input. Shape: (N, samples)"""
    return torch.from_numpy(np.ascontiguousarray(waves)).float()


def embed_audio(backbone: nn.Module, clips: np.ndarray, batch_size: int = 512) -> Tensor:
    """Embeddings ``(N, dim)`` of waveforms ``(N, samples)`` in eval mode."""
    return embed_clips(backbone, clips, as_input, batch_size)


def probe_audio(backbone: nn.Module, tasks: list[ProbeTask], cfg: RunConfig, linear: bool = True) -> ProbeScores:
    embeddings = {t.name: (embed_audio(backbone, t.gallery), embed_audio(backbone, t.queries)) for t in tasks}
    return score_embeddings(embeddings, tasks, cfg.eval, linear)


def probe_log_mel(tasks: list[ProbeTask], cfg: RunConfig, frontend: LogMel, linear: bool = True) -> ProbeScores:
    """The raw baseline: the same probes on the flattened log-mel spectrogram of the front end."""
    with torch.no_grad():
        embeddings = {t.name: (frontend(torch.from_numpy(t.gallery)).flatten(1),
                               frontend(torch.from_numpy(t.queries)).flatten(1)) for t in tasks}
    return score_embeddings(embeddings, tasks, cfg.eval, linear)


def calibrate_audio_batchnorm(backbone: nn.Module, clips: np.ndarray, batch_size: int = 256) -> nn.Module:
    """Re-estimate BatchNorm statistics on unlabeled clips (the calibrated random-init baseline)."""
    return calibrate_on_clips(backbone, clips, as_input, batch_size)
