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

from fedssl.config import RunConfig
from fedssl.local_only import train_rounds
from fedssl.ssl.base import SSLModel
from fedssl.train import LocalResult


def train_centralized(cfg: RunConfig, data: Any, steps_per_round: list[int], sample_each_round: bool = False,
                      after_round: Callable[[int, SSLModel], None] | None = None
                      ) -> tuple[SSLModel, list[LocalResult]]:
    """The model after ``steps_per_round`` (one entry per federated round), and each round's result.

    One device's training across rounds (``fedssl.local_only.train_rounds``) on the pooled data, the
    schedule spanning ``len(steps_per_round)`` rounds; rounds with no steps are skipped.
    ``sample_each_round`` draws a fresh random sample of exactly the images a round needs (steps x
    batch) instead of shuffling all of ``data`` (the image benchmarks: the pooled set is larger than
    a round visits). ``after_round(round, model)`` runs after each round that trained (learning curves).
    """
    rounds = [(server_round, steps) for server_round, steps in enumerate(steps_per_round, start=1) if steps]
    return train_rounds(replace(cfg, num_rounds=len(steps_per_round)), data, rounds,
                        lambda steps: steps * cfg.train.batch_size if sample_each_round else 0, after_round)


def equal_steps(rounds: int, devices_per_round: int, local_steps: int) -> list[int]:
    """Steps per round of a federation where every sampled device trains ``local_steps``."""
    return [devices_per_round * local_steps] * rounds
