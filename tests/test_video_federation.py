"""A real video federation: flower-superlink + 3 flower-supernode processes on generated MP4 clips.

Two nodes train on simulated shards of the generated clip corpus (a few motions each), the third on
its own "camera folder" (``data-dir``) of MP4 files plus an empty, a corrupt and a too-short one; the
server probes clip retrieval on the motion and object labels each round, keeps the best model per
task and writes an encoder that takes grey frames.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from fedssl.checkpoint import load_encoder
from fedssl.data.video_corpus import CorpusSpec, make_corpus, write_video
from launcher.deployment import LocalDeployment
from launcher.flwr_cli import TINY_VIDEO_RUN

pytestmark = pytest.mark.federation
TASKS = ("video-motion", "video-object")


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    corpus = root / "corpus"
    rows = make_corpus(corpus, CorpusSpec(train_per_motion=8, test_per_motion=4))
    camera = root / "camera"
    camera.mkdir()
    for row in rows[::4][:12]:  # a device's recordings: plain files, no labels
        shutil.copy(corpus / row.path, camera / row.path.replace("/", "_"))
    (camera / "empty.mp4").write_bytes(b"")
    (camera / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom not a video at all" * 8)
    write_video(camera / "short.mp4", np.zeros((4, 32, 32), np.uint8))
    nodes = [{"partition-id": 0, "num-partitions": 2}, {"partition-id": 1, "num-partitions": 2},
             {"data-dir": str(camera)}]
    with LocalDeployment(root / "fed", node_configs=nodes, env={"OMP_NUM_THREADS": "1"}) as fed:
        return fed.run({**TINY_VIDEO_RUN, "video.corpus-dir": str(corpus)}, timeout=900)


def test_three_video_clients_two_rounds_both_labels_probed(video_run):
    metrics = json.loads((video_run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert [r["round"] for r in metrics["rounds"]] == [1, 2]
    for r in metrics["rounds"]:
        assert (r["sampled"], r["replied"], r["accepted"], r["failed"]) == (3, 3, 3, 0)
        assert set(r["knn"]) == set(TASKS) and r["loss"] > 0
        assert all(0.0 <= s <= 1.0 for s in r["knn"].values())
        # clip retrieval top-5 beside top-1 (kNN at eval.report-k = 1) every round
        assert set(r["retrieval_top5"]) == set(TASKS)
        assert all(r["knn_report"][t] <= r["retrieval_top5"][t] <= 1.0 for t in TASKS)
    assert set(metrics["baselines"]) == {"raw-pixels", "random-init", "random-init-bn"}
    assert all(set(p["retrieval_top5"]) == set(TASKS) for p in metrics["baseline_probes"].values())
    chance = {"video-motion": 1 / 8, "video-object": 1 / 10}
    for task in TASKS:  # raw pixels are above chance on both labels: the tasks are learnable
        assert metrics["baselines"]["raw-pixels"][task] > 1.5 * chance[task]
        assert (video_run / "best" / f"{task}.pt").is_file()
        assert metrics["best"][task]["round"] in (0, 1, 2)
    assert set(metrics["rounds"][-1]["linear"]) == set(TASKS)


def test_final_video_encoder_takes_grey_frames(video_run):
    encoder, meta = load_encoder(video_run / "encoder.pt")
    assert meta["modality"] == "video" and meta["round"] == 2 and meta["video"]["encoder"] == "r3d-tiny"
    assert (meta["input"]["layout"], meta["input"]["frames"], meta["input"]["height"]) == ("NTHW", 8, 32)
    z = encoder(torch.rand(3, 8, 32, 32))
    assert z.shape == (3, meta["embedding_dim"]) == (3, 80) and torch.isfinite(z).all()
