"""Centralized SSL at equal compute: the upper reference every federated benchmark compares with.

One model, the federation's initial encoder (seeded as ``server_app.app`` seeds it), trains on the
pooled data round by round: as many optimiser steps per round as all devices of that round made
together, the same recipe, the same learning-rate schedule over the same number of rounds, and
the optimiser state kept between rounds when devices keep theirs. What differs from the
federation is only what federating costs: one model on all the data instead of averaged copies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from fedssl.config import RunConfig
from fedssl.modality import MODALITIES
from fedssl.ssl import build_ssl_model
from fedssl.ssl.base import SSLModel
from fedssl.train import LocalResult, RoundPosition, train_local


def train_centralized(cfg: RunConfig, data: Any, steps_per_round: list[int], sample_each_round: bool = False,
                      after_round: Callable[[int, SSLModel], None] | None = None
                      ) -> tuple[SSLModel, list[LocalResult]]:
    """The model after ``steps_per_round`` (one entry per federated round), and each round's result.

    ``sample_each_round`` draws a fresh random sample of exactly the images a round needs (steps x
    batch) instead of shuffling all of ``data`` (the image benchmarks: the pooled set is larger than
    a round visits). ``after_round(round, model)`` runs after each round that trained (learning curves).
    """
    modality = MODALITIES.get(cfg.data.modality)
    torch.manual_seed(cfg.seed)
    model = build_ssl_model(cfg.ssl, cfg.model, backbone=modality.build_backbone(cfg))
    state, results = None, []
    for server_round, steps in enumerate(steps_per_round, start=1):
        if steps == 0:
            continue
        result = train_local(model, data, cfg.model, replace(cfg.train, max_steps=steps), seed=cfg.seed + server_round,
                             max_samples=steps * cfg.train.batch_size if sample_each_round else 0,
                             position=RoundPosition(server_round, len(steps_per_round)),
                             optimizer_state=state, views=modality.views(cfg))
        state = result.optimizer_state if cfg.train.keep_optimizer_state else None
        results.append(result)
        if after_round is not None:
            after_round(server_round, model)
    return model, results


def equal_steps(rounds: int, devices_per_round: int, local_steps: int) -> list[int]:
    """Steps per round of a federation where every sampled device trains ``local_steps``."""
    return [devices_per_round * local_steps] * rounds
