"""Video probe tasks: clip retrieval every round on the motion label and on the object label.

- ``video-motion``: which of 8 motions (direction of travel, rotation sense, zoom); needs frames.
- ``video-object``: which of 10 Fashion-MNIST garments moves (an appearance label, across motions).

Gallery: train-split clips; queries: test-split clips (garments never seen in training). Scores are
the image probes' (weighted kNN, linear probe; :func:`fedssl.probe.score_embeddings`) plus clip
retrieval top-5 (as FedVSSL and CtP report it; top-1 is ``knn_report`` at ``eval.report-k = 1``) on
embeddings of the centre ``video.crop-frames`` window of each clip. The raw baseline is the
flattened window's pixels in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from fedssl.clip_probe import calibrate_on_clips, draw_task, embed_clips, load_corpus_tasks
from fedssl.config import RunConfig
from fedssl.probe import ProbeScores, ProbeTask, score_embeddings
from fedssl.registry import Registry
from fedssl.video.augment import centre_crops
from fedssl.video.data import VideoCorpus, load_corpus

# loader(run config, corpus, rng) -> the task's gallery and queries (uint8 windows (N, crop frames, size, size))
VideoTaskLoader = Callable[[RunConfig, VideoCorpus, np.random.Generator], ProbeTask]
VIDEO_TASKS: Registry[VideoTaskLoader] = Registry("eval.tasks")


def _task(name: str, label: str) -> VideoTaskLoader:
    def load(cfg: RunConfig, corpus: VideoCorpus, rng: np.random.Generator) -> ProbeTask:
        return draw_task(name, corpus.clips, [getattr(r, label) for r in corpus.rows],
                         {split: corpus.select(split) for split in ("train", "test")},
                         {"train": cfg.eval.gallery_size, "test": cfg.eval.query_size}, rng,
                         lambda clips: centre_crops(clips, cfg.video.crop_frames),
                         f"the corpus at {cfg.video.corpus_dir} has no {{split}} clips")
    return load


VIDEO_TASKS.add("video-motion", _task("video-motion", "motion"))
VIDEO_TASKS.add("video-object", _task("video-object", "object"))
DEFAULT_VIDEO_TASKS = ("video-motion", "video-object")


def load_video_tasks(cfg: RunConfig) -> list[ProbeTask]:
    """The tasks named in ``eval.tasks``, drawn from the corpus with one generator seeded by ``seed``."""
    return load_corpus_tasks(VIDEO_TASKS, cfg, lambda: load_corpus(cfg.video))


def as_input(clips: np.ndarray) -> Tensor:
    """uint8 clips -> the encoder's float input in [0, 1]. Shape: (N, T, H, W)"""
    return torch.from_numpy(np.ascontiguousarray(clips)).float() / 255.0


def embed_video(backbone: nn.Module, clips: np.ndarray, batch_size: int = 128) -> Tensor:
    """Embeddings ``(N, dim)`` of uint8 clips ``(N, T, H, W)`` in eval mode."""
    return embed_clips(backbone, clips, as_input, batch_size)


def probe_video(backbone: nn.Module, tasks: list[ProbeTask], cfg: RunConfig, linear: bool = True) -> ProbeScores:
    embeddings = {t.name: (embed_video(backbone, t.gallery), embed_video(backbone, t.queries)) for t in tasks}
    return score_embeddings(embeddings, tasks, cfg.eval, linear, top5=True)


def probe_raw_pixels(tasks: list[ProbeTask], cfg: RunConfig, linear: bool = True) -> ProbeScores:
    """The raw baseline: the same probes on the flattened window's pixels."""
    embeddings = {t.name: (as_input(t.gallery).flatten(1), as_input(t.queries).flatten(1)) for t in tasks}
    return score_embeddings(embeddings, tasks, cfg.eval, linear, top5=True)


def calibrate_video_batchnorm(backbone: nn.Module, clips: np.ndarray, batch_size: int = 128) -> nn.Module:
    """Re-estimate BatchNorm statistics on unlabeled clips (the calibrated random-init baseline)."""
    return calibrate_on_clips(backbone, clips, as_input, batch_size)
