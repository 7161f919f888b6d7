"""Server-side verification of collapse: the server measures what it would aggregate, it does not take the
device's word for it.

Each candidate update is loaded into an encoder and embeds a fixed, small, server-held batch of unlabeled
images (``filter.probe-size`` images of the first probe task's gallery: never a device's data). Its
``z_std`` and RankMe, measured here, must clear the collapse floors; and the figures the device reported
(on its own images) must agree with them within ``filter.claim-tolerance``:

    r / m <= tolerance   for z_std, and for RankMe / min(sample size, dim) on each side,

with ``r`` reported and ``m`` measured, both floored at 1e-3: over-claiming is rejected, under-claiming is
not (RankMe is bounded by the sample size, and a device with a few samples reports less than the
server's batch shows; the reported floors catch a low report on their own). Devices measure on their
own non-IID images, the server on a mixed batch, so honest figures differ: 20 honest replies
(10 Dirichlet-0.5 clients, 2 rounds) were within x1.18 in ``bench/bench_attacks.py``
(``honest.claim_ratios``), 3 tiny-run clients within x1.05; the default tolerance (4) leaves room for
devices whose images are all of one kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedssl import reply
from fedssl.collapse import rankme, z_std
from fedssl.config import RunConfig
from fedssl.modality import MODALITIES
from fedssl.state import strip_prefix, to_torch
from fedssl.train import COLLAPSE_SAMPLE
from server_app.screening import CLAIMS, COLLAPSE, RejectedUpdate

FLOOR = 1e-3  # below this a figure is "nothing": ratios are taken against it, not against 0


@dataclass(frozen=True)
class Measured:
    """What the server measured of one update on its probe batch."""

    z_std: float
    rankme: float


class CollapseVerifier:
    """Measures ``z_std`` and RankMe of candidate updates on a fixed server-held batch, and judges claims."""

    def __init__(self, cfg: RunConfig, images: np.ndarray) -> None:
        """``images``: the server's own unlabeled probe batch (N >= 2) in ``data.modality``'s layout."""
        if len(images) < 2:
            raise ValueError(f"run config 'filter.probe-size' needs at least 2 probe images, got {len(images)}")
        self.cfg = cfg
        self.images = images
        self.modality = MODALITIES.get(cfg.data.modality)

    @classmethod
    def from_gallery(cls, cfg: RunConfig, gallery: np.ndarray) -> CollapseVerifier | None:
        """``filter.probe-size`` images drawn (seeded) from a probe task's gallery; None when switched off."""
        size = cfg.filter.probe_size
        if not size or not cfg.filter.enabled:
            return None
        rng = np.random.default_rng(cfg.seed + 7)
        return cls(cfg, gallery[np.sort(rng.choice(len(gallery), min(size, len(gallery)), replace=False))])

    @torch.no_grad()
    def measure(self, arrays: Mapping[str, np.ndarray]) -> Measured:
        """Embed the probe batch with ``arrays`` (a backbone's entries) in eval mode; every key is read once."""
        backbone = self.modality.build_backbone(self.cfg)
        backbone.load_state_dict(strip_prefix(to_torch(arrays)), strict=True)
        z = self.modality.embed(backbone, self.images, self.cfg)
        return Measured(z_std(z), rankme(z))

    def check(self, arrays: Mapping[str, np.ndarray], metrics: Mapping[str, float]) -> Measured:
        """Reject an update that is collapsed on the server's batch, or whose reported figures disagree.

        Raises:
            RejectedUpdate: ``collapse`` (measured below the floors) or ``claims`` (reported vs measured
            beyond ``filter.claim-tolerance``).
        """
        got = self.measure(arrays)
        f, dim = self.cfg.filter, self.cfg.model.embedding_dim
        if not np.isfinite([got.z_std, got.rankme]).all():
            raise RejectedUpdate(COLLAPSE, f"server-measured z_std {got.z_std} / rankme {got.rankme} not finite")
        if got.z_std < f.min_z_std or got.rankme / dim < f.min_rankme_ratio:
            raise RejectedUpdate(COLLAPSE, f"server-measured z_std {got.z_std:.3f}, rankme/dim {got.rankme / dim:.3f} "
                                           f"(floors {f.min_z_std}, {f.min_rankme_ratio})")
        if f.claim_tolerance:
            pairs = {"z_std": (metrics[reply.Z_STD], got.z_std),
                     "rankme/max": (metrics[reply.RANKME] / min(COLLAPSE_SAMPLE, dim),
                                    got.rankme / min(len(self.images), dim))}
            for name, (reported, measured) in pairs.items():
                # Only a claim above what the server measures is a lie that matters (a collapsed model
                # dressed as healthy); a device with few samples (a few audio clips) reports a lower
                # RankMe than the server's larger batch shows, and the floors judge low reports anyway.
                if reported > measured and claim_ratio(reported, measured) > f.claim_tolerance:
                    raise RejectedUpdate(CLAIMS, f"{name} reported {reported:.3f}, measured {measured:.3f} "
                                                 f"(tolerance x{f.claim_tolerance:g})")
        return got


def claim_ratio(reported: float, measured: float) -> float:
    """``max / min`` of the two figures, each floored at :data:`FLOOR` (1 when they agree)."""
    a, b = max(reported, FLOOR), max(measured, FLOOR)
    return max(a, b) / min(a, b)
