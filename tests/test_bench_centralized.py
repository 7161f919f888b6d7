"""The centralized reference of the federated benchmarks trains on the federation's schedule."""

import numpy as np
import pytest
import torch

from bench.centralized import equal_steps, train_centralized
from fedssl.config import RunConfig
from fedssl.models.encoders import build_encoder
from fedssl.train import RoundPosition, learning_rate

CONFIG = {"num-rounds": 3, "train.batch-size": 16, "model.readout": "pool", "model.embedding-dim": 32,
          "train.warmup-rounds": 1.0}


def _images(n: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)


def test_it_follows_the_federation_learning_rate_round_by_round():
    cfg = RunConfig.from_flat(CONFIG)
    steps = equal_steps(rounds=3, devices_per_round=2, local_steps=1)
    assert steps == [2, 2, 2]
    _, results = train_centralized(cfg, _images(), steps)
    assert [r.steps for r in results] == steps
    # The last step of each round has the federation's rate at that point: warmup in round 1, then cosine decay.
    expected = [learning_rate(cfg.train, RoundPosition(r, 3), 1, 2) for r in (1, 2, 3)]
    assert [r.lr for r in results] == pytest.approx(expected)
    assert results[0].lr == pytest.approx(cfg.train.lr) and results[2].lr < 0.2 * cfg.train.lr


def test_it_starts_from_the_federation_initial_encoder_and_keeps_the_optimiser_state():
    cfg = RunConfig.from_flat(CONFIG)
    torch.manual_seed(cfg.seed)
    initial = build_encoder(cfg.model).state_dict()
    model, results = train_centralized(cfg, _images(), [0, 0, 0])  # no step: the initial encoder itself
    assert results == [] and all(torch.equal(initial[k], v) for k, v in model.backbone.state_dict().items())
    _, kept = train_centralized(cfg, _images(), [2, 2])
    assert all(s["step"] == 4 for s in kept[-1].optimizer_state["state"].values())  # Adam counted 2 rounds x 2
    fresh = RunConfig.from_flat({**CONFIG, "train.keep-optimizer-state": False})
    _, restarted = train_centralized(fresh, _images(), [2, 2])
    assert all(s["step"] == 2 for s in restarted[-1].optimizer_state["state"].values())


def test_the_recipe_curve_probes_after_every_round_of_a_variant():
    from bench.bench_recipe_curve import curve

    cell = curve("block2-readout", "3", rounds=2, steps=1, seed=0, quick=True)  # client 3's shard, 2 x 1 step
    assert [p["round"] for p in cell["points"]] == [1, 2] and [p["steps"] for p in cell["points"]] == [1, 2]
    assert cell["overrides"] == {"model.readout": "block2", "model.embedding-dim": 3136}
    for point in cell["points"]:
        assert {"knn", "knn_report", "knn_centred", "linear"} <= set(point)
        assert all(0.0 <= point[k] <= 1.0 for k in ("knn", "knn_report", "knn_centred", "linear"))
