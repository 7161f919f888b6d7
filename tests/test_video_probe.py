"""The per-round video probes: clip retrieval top-1 and top-5 on the motion and object labels.

Scored on a tiny generated corpus, by the probe functions and by the server's evaluator, which
writes them to ``metrics.json`` per round and for the baselines.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedssl.config import RunConfig
from fedssl.data.video_corpus import CorpusSpec, make_corpus
from fedssl.knn import retrieval_top_k
from fedssl.modality import MODALITIES
from fedssl.probe import probe_pixels
from fedssl.ssl import build_ssl_model
from fedssl.state import backbone_arrays
from fedssl.video.probe import as_input, load_video_tasks, probe_raw_pixels, probe_video
from launcher.flwr_cli import TINY_VIDEO_RUN
from tests.test_strategy import message

TASKS = ("video-motion", "video-object")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> RunConfig:
    root = tmp_path_factory.mktemp("video-probe")
    make_corpus(root, CorpusSpec(train_per_motion=4, test_per_motion=2))
    return RunConfig.from_flat({**TINY_VIDEO_RUN, "video.corpus-dir": str(root)})


def test_raw_pixels_score_retrieval_top5_beside_top1_on_both_labels(cfg):
    tasks = load_video_tasks(cfg)
    scores = probe_raw_pixels(tasks, cfg, linear=False)
    assert set(scores.retrieval_top5) == set(TASKS) and cfg.eval.report_k == 1
    for task in tasks:  # exact cosine of the flattened window, no centring
        g, q = as_input(task.gallery).flatten(1), as_input(task.queries).flatten(1)
        expected = retrieval_top_k(g, torch.from_numpy(task.gallery_labels), q, torch.from_numpy(task.query_labels))
        assert scores.retrieval_top5[task.name] == pytest.approx(expected)
        # top-1 (kNN at report-k = 1) is the nearest clip; top-5 can only add hits
        assert scores.knn_report[task.name] <= scores.retrieval_top5[task.name] <= 1.0
    assert scores.as_dict()["retrieval_top5"] == scores.retrieval_top5
    assert probe_pixels(tasks, cfg.eval, linear=False).retrieval_top5 == {}  # image probes leave it out
    assert "retrieval_top5" not in probe_pixels(tasks, cfg.eval, linear=False).as_dict()


def test_an_encoder_is_scored_on_top5_too(cfg):
    torch.manual_seed(0)
    tasks = load_video_tasks(cfg)
    scores = probe_video(MODALITIES.get("video").build_backbone(cfg), tasks, cfg, linear=False)
    assert set(scores.retrieval_top5) == set(TASKS)
    assert all(scores.knn_report[t] <= scores.retrieval_top5[t] <= 1.0 for t in TASKS)


def test_the_server_records_top5_per_round_and_for_baselines_and_still_picks_models_by_knn(cfg, tmp_path, caplog):
    from server_app.evaluation import RoundEvaluator
    from server_app.outputs import RunOutputs
    from server_app.strategy import FedSSL

    torch.manual_seed(0)
    modality = MODALITIES.get("video")
    initial = backbone_arrays(build_ssl_model(cfg.ssl, cfg.model, backbone=modality.build_backbone(cfg)))
    strategy = FedSSL(cfg, dict(initial))
    outputs = RunOutputs(tmp_path, 5, cfg)
    evaluator = RoundEvaluator(cfg, strategy, outputs, modality.load_tasks(cfg))
    with caplog.at_level("INFO", logger="flwr"):
        evaluator(0, ArrayRecord(array_dict={k: Array(v) for k, v in initial.items()}))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for name in ("raw-pixels", "random-init", "random-init-bn"):
        assert set(metrics["baseline_probes"][name]["retrieval_top5"]) == set(TASKS)
    assert "top-5 video-motion=" in caplog.text

    rng = np.random.default_rng(0)
    replies = [message(node, {k: (v + rng.normal(0, 0.01, v.shape)).astype(v.dtype) if v.dtype.kind == "f" else v
                              for k, v in initial.items()}, n=16.0, steps=2.0, rankme=40.0) for node in (1, 2)]
    arrays, _ = strategy.aggregate_train(1, replies)
    caplog.clear()
    with caplog.at_level("INFO", logger="flwr"):
        reported = evaluator(1, arrays)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    (round1,) = metrics["rounds"]
    assert set(round1["retrieval_top5"]) == set(TASKS)
    assert all(round1["knn_report"][t] <= round1["retrieval_top5"][t] for t in TASKS)
    assert {f"top5-{t}" for t in TASKS} <= set(reported.keys())
    assert "round 1/2" in caplog.text and "top-5 video-motion=" in caplog.text
    for task in TASKS:  # the best model is still chosen on kNN at eval.knn-k (round 0: the initial encoder)
        initial_knn, round_knn = metrics["baselines"]["random-init"][task], round1["knn"][task]
        expected = {"round": 1, "score": round_knn} if round_knn > initial_knn else {"round": 0, "score": initial_knn}
        assert metrics["best"][task] == expected
