"""What the audio and video probes share: tasks drawn from a labelled clip corpus, and backbone passes over clips.

A task's gallery comes from the corpus's train split and its queries from the test split, each drawn
without replacement with the run's generator and kept in corpus order; labels are coded 0..C-1 in
the sorted order of the values drawn. A backbone runs over clips in batches: in eval mode for
embeddings, in train mode to re-estimate BatchNorm statistics (the calibrated random-init baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from fedssl.config import RunConfig
from fedssl.probe import ProbeTask
from fedssl.registry import Registry

ToInput = Callable[[np.ndarray], Tensor]  # a batch of stored clips -> the backbone's float input
C = TypeVar("C")  # a modality's corpus


def load_corpus_tasks(registry: Registry[Callable[[RunConfig, C, np.random.Generator], ProbeTask]], cfg: RunConfig,
                      load_corpus: Callable[[], C]) -> list[ProbeTask]:
    """The tasks named in ``eval.tasks`` (looked up before the corpus is decoded), drawn from the corpus with
    one generator seeded by ``seed``."""
    loaders = [registry.get(name) for name in cfg.eval.tasks]
    corpus = load_corpus()
    rng = np.random.default_rng(cfg.seed)
    return [load(cfg, corpus, rng) for load in loaders]


def draw_task(name: str, clips: np.ndarray, labels: Sequence[object], pools: dict[str, np.ndarray],
              sizes: dict[str, int], rng: np.random.Generator, crop: Callable[[np.ndarray], np.ndarray],
              empty: str) -> ProbeTask:
    """A task from ``clips`` and one label per clip: gallery from ``pools["train"]``, queries from ``pools["test"]``.

    ``empty`` says, with ``{split}`` filled in, where a pool with no clips came from.

    Raises:
        ValueError: naming the task and ``empty`` if a pool has no clips.
    """
    parts = []
    for split in ("train", "test"):
        pool = pools[split]
        if not len(pool):
            raise ValueError(f"eval task {name!r}: {empty.format(split=split)}")
        parts.append(np.sort(rng.choice(pool, min(sizes[split], len(pool)), replace=False)))
    code = {v: c for c, v in enumerate(sorted({labels[i] for i in np.concatenate(parts)}))}

    def coded(idx: np.ndarray) -> np.ndarray:
        return np.asarray([code[labels[i]] for i in idx], dtype=np.int64)

    g, q = parts
    return ProbeTask(name, crop(clips[g]), coded(g), crop(clips[q]), coded(q))


@torch.no_grad()
def embed_clips(backbone: nn.Module, clips: np.ndarray, to_input: ToInput, batch_size: int) -> Tensor:
    """Embeddings ``(N, dim)`` of stored clips ``(N, ...)`` in eval mode (the backbone's mode is restored)."""
    was_training = backbone.training
    backbone.eval()
    out = [backbone(to_input(clips[i:i + batch_size])) for i in range(0, len(clips), batch_size)]
    backbone.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def calibrate_on_clips(backbone: nn.Module, clips: np.ndarray, to_input: ToInput, batch_size: int) -> nn.Module:
    """Re-estimate BatchNorm statistics on unlabeled clips (a cumulative average over all batches); eval mode."""
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    backbone.train()
    for i in range(0, len(clips), batch_size):
        backbone(to_input(clips[i:i + batch_size]))
    for bn in norms:
        bn.momentum = 0.1
    return backbone.eval()
