"""The local-only baseline: clients train alone for exactly the rounds and steps they trained in the run."""

import json

import numpy as np
import pytest

from fedssl import local_only
from fedssl.config import RunConfig

TINY = {"train.batch-size": 16, "data.max-samples": 64, "eval.tasks": "fashion-mnist", "eval.gallery-size": 200,
        "eval.query-size": 50, "eval.linear-labels": 100, "num-rounds": 3}


def _metrics(cfg: RunConfig, clients_per_round: list[list[tuple[int, int]]]) -> dict:
    rounds = [{"round": r + 1, "knn": {"fashion-mnist": 0.5},
               "clients": [{"node_id": 100 + pid, "partition-id": float(pid), "num-partitions": 4.0,
                            "steps": float(steps)} for pid, steps in clients]}
              for r, clients in enumerate(clients_per_round)]
    return {"run_id": "t", "status": "completed", "config": cfg.to_flat(), "rounds": rounds,
            "baselines": {"raw-pixels": {"fashion-mnist": 0.7}}, "best": {}}


def test_participation_lists_each_clients_rounds_and_steps():
    cfg = RunConfig.from_flat(TINY)
    metrics = _metrics(cfg, [[(0, 3), (2, 2)], [(0, 3)], [(1, 1)]])
    assert local_only.participation(metrics) == {0: [(1, 3), (2, 3)], 2: [(1, 2)], 1: [(3, 1)]}
    assert local_only.num_partitions_of(metrics) == 4
    devices = _metrics(cfg, [[(0, 3)]])
    devices["rounds"][0]["clients"][0]["partition-id"] = -1.0  # a device with its own data
    with pytest.raises(ValueError, match="simulation"):
        local_only.participation(devices)


def test_mean_scores_average_every_probe_and_task():
    per_client = [{"knn": {"a": 0.2, "b": 0.4}, "linear": {"a": 1.0, "b": 0.0}},
                  {"knn": {"a": 0.4, "b": 0.6}, "linear": {"a": 0.0, "b": 1.0}}]
    assert local_only.mean_scores(per_client) == {"knn": pytest.approx({"a": 0.3, "b": 0.5}),
                                                  "linear": pytest.approx({"a": 0.5, "b": 0.5})}


def test_run_writes_the_baseline_into_metrics_and_redraws_the_plot(tmp_path):
    cfg = RunConfig.from_flat(TINY)
    (tmp_path / "metrics.json").write_text(json.dumps(_metrics(cfg, [[(0, 2), (1, 1)], [(0, 2)]])))
    scores = local_only.run(tmp_path, workers=2)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    baseline = metrics["baselines"]["local-only"]
    assert set(baseline) == {"fashion-mnist"} and 0.1 < baseline["fashion-mnist"] <= 1.0
    probes = metrics["baseline_probes"]["local-only"]
    assert set(probes["clients"]) == {"0", "1"}  # the clients that trained, each scored
    assert baseline["fashion-mnist"] == pytest.approx(
        np.mean([c["knn"]["fashion-mnist"] for c in probes["clients"].values()]))
    assert scores["knn"] == baseline and (tmp_path / "knn.png").stat().st_size > 0


def test_the_baseline_trains_and_probes_each_modality_s_own_clients(tmp_path):
    """Video: each client alone on its own clip shard (motions), r3d-tiny, the video probes with top-5."""
    from fedssl.data.video_corpus import CorpusSpec, make_corpus
    from launcher.flwr_cli import TINY_VIDEO_RUN

    make_corpus(tmp_path / "corpus", CorpusSpec(train_per_motion=4, test_per_motion=2))
    cfg = RunConfig.from_flat({**TINY_VIDEO_RUN, "video.corpus-dir": str(tmp_path / "corpus"),
                               "eval.gallery-size": 32, "eval.query-size": 16, "eval.linear-labels": 32})
    metrics = _metrics(cfg, [[(0, 2), (1, 1)]])
    metrics["baselines"] = {"raw-pixels": {"video-motion": 0.3, "video-object": 0.2}}
    for entry in metrics["rounds"]:
        entry["knn"] = {"video-motion": 0.3, "video-object": 0.2}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    scores = local_only.run(tmp_path, workers=1)
    probes = json.loads((tmp_path / "metrics.json").read_text())["baseline_probes"]["local-only"]
    assert set(scores["knn"]) == {"video-motion", "video-object"} and set(probes["clients"]) == {"0", "1"}
    assert all(0.0 <= s <= 1.0 for s in scores["retrieval_top5"].values())
