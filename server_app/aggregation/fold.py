"""Running aggregates: a rule folded over updates one at a time, so the server holds O(model) at any N.

A ``Fold`` is told about each accepted update as it arrives (``add``) and gives the new global model
at the end (``result``); nothing of an update is kept once ``add`` returns. FedAvg, FairAvg,
loss-weighted, FedVSSL and L-DAWA are weighted sums and fold exactly (their folds live beside their
batch form, which is the fold applied to a list); the robust rules (median, trimmed mean, Krum) need
every update at once and have no fold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from server_app.aggregation.base import Arrays


class Fold(Protocol):
    """A rule as a running aggregate."""

    def add(self, update: Mapping[str, np.ndarray], num_examples: float, loss: float) -> None: ...

    def result(self) -> Arrays: ...


# fold builder(previous global) -> an empty running aggregate of one rule
FoldBuilder = Callable[[Mapping[str, np.ndarray]], Fold]


def fold_all(fold: Fold, updates: Sequence[Mapping[str, np.ndarray]], num_examples: Sequence[float],
             losses: Sequence[float]) -> Arrays:
    """A fold over a list: the batch form of a streamable rule.

    Raises:
        ValueError: if there are no updates, the lists differ in length, or a weight is unusable.
    """
    if not updates:
        raise ValueError("nothing to aggregate: no updates")
    if not len(updates) == len(num_examples) == len(losses):
        raise ValueError(f"{len(updates)} updates, {len(num_examples)} example counts, {len(losses)} losses")
    for update, n, loss in zip(updates, num_examples, losses):
        fold.add(update, float(n), float(loss))
    return fold.result()
