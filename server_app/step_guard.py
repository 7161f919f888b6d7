"""A defence against scaled, sign-flipped and colluding updates that works with any number of replies.

The round's median (``check_norms``) needs three replies to say which one is the outlier; these two
checks need none, because they compare each update's step ``d_k = x_k - g`` (from the global model it
trained on) with the federation's own past:

* **Norm clipping** (``filter.clip-ratio``): a step longer than ``B = clip-ratio x median(m_1..m_H)`` is
  scaled down to ``B`` before any rule sees it, where ``m_t`` is the median accepted (clipped) step norm of
  each of the last ``filter.norm-history`` rounds. One float per round is kept (streaming-friendly). Until a
  round has been aggregated there is no history; that first round falls back to its own median when it
  has at least three updates, and is not clipped otherwise.
* **Direction** (``filter.min-cosine``): a step whose cosine with the previous global step (``g_t - g_{t-1}``)
  is below the floor is rejected (reason ``direction``). Honest SSL steps of consecutive rounds point the
  same way; a sign-flipped step points against it. Off by default (-1): see ``bench/bench_attacks.py``.

A scaled step can therefore move the model at most ``B`` per attacker, however many replies arrive.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from fedssl.config import FilterConfig
from server_app.aggregation.base import is_float
from server_app.screening import DIRECTION, RejectedUpdate


class ClippedStep(Mapping[str, np.ndarray]):
    """``g + scale * (x - g)`` on floating entries, read key by key (no copy of the update is kept)."""

    def __init__(self, update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], scale: float) -> None:
        self._update, self._reference, self.scale = update, reference, scale

    def __getitem__(self, key: str) -> np.ndarray:
        value, ref = self._update[key], self._reference[key]
        if not is_float(ref):
            return value
        return (ref + np.float32(self.scale) * np.subtract(value, ref, dtype=np.float32)).astype(ref.dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self._update)

    def __len__(self) -> int:
        return len(self._update)


class StepGuard:
    """Clip bound from recent rounds and the previous global step; told about every aggregated round."""

    def __init__(self, cfg: FilterConfig) -> None:
        self.clip_ratio = cfg.clip_ratio if cfg.enabled else 0.0
        self.min_cosine = cfg.min_cosine if cfg.enabled else -1.0
        self._medians: deque[float] = deque(maxlen=cfg.norm_history)
        self._previous_step: dict[str, np.ndarray] | None = None

    def bound(self, round_norms: list[float]) -> float | None:
        """The clip bound for this round (None: no clipping), from history or, in the first round, its own median."""
        if not self.clip_ratio:
            return None
        if self._medians:
            return self.clip_ratio * float(np.median(self._medians))
        return self.clip_ratio * float(np.median(round_norms)) if len(round_norms) >= 3 else None

    def recent_median(self) -> float | None:
        """The median accepted step norm of recent rounds (None before the first aggregated round)."""
        return float(np.median(self._medians)) if self._medians else None

    def check_direction(self, update: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                        norm: float) -> float | None:
        """Cosine of the update's step with the previous global step (None when there is none to compare).

        Raises:
            RejectedUpdate: ``direction``, if the cosine is below ``filter.min-cosine``.
        """
        step = self._previous_step
        if step is None or self.min_cosine <= -1.0:
            return None
        step_norm = float(np.sqrt(sum(float(np.vdot(s, s)) for s in step.values())))
        if step_norm == 0.0 or norm == 0.0:
            return None
        dot = sum(float(np.vdot(np.subtract(update[k], reference[k], dtype=np.float32), s)) for k, s in step.items())
        cosine = dot / (norm * step_norm)
        if cosine < self.min_cosine:
            raise RejectedUpdate(DIRECTION, f"cosine {cosine:.3f} with the previous global step < {self.min_cosine:g}")
        return cosine

    def state(self) -> dict[str, Any]:
        """What the guard remembers (for checkpoints): the recent medians and the previous global step."""
        return {"medians": list(self._medians), "previous_step": self._previous_step}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state` (a resumed run clips and compares as if it had never stopped)."""
        self._medians.clear()
        self._medians.extend(float(m) for m in state.get("medians", ()))
        step = state.get("previous_step")
        self._previous_step = {k: np.asarray(v, dtype=np.float32) for k, v in step.items()} if step else None

    def observe(self, accepted_norms: list[float], old: Mapping[str, np.ndarray],
                new: Mapping[str, np.ndarray]) -> None:
        """Remember this round's median accepted (clipped) norm and its global step."""
        if accepted_norms:
            self._medians.append(float(np.median(accepted_norms)))
        if self.min_cosine > -1.0:
            self._previous_step = {k: np.subtract(new[k], old[k], dtype=np.float32) for k in old if is_float(old[k])}
