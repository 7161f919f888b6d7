"""A real audio federation: flower-superlink + 3 flower-supernode processes on generated audio.

Two nodes train on simulated shards of the generated corpus, the third on its own "microphone
folder" (``data-dir``) holding WAV and FLAC files plus a corrupt one; the server probes every audio
task each round, keeps the best model per task and writes an encoder that takes the raw waveform.
The run sends the whole SSL model (``transport-scope = "model"``): the heads travel and are averaged.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from fedssl.checkpoint import load_encoder
from fedssl.data.audio_corpus import CorpusSpec, make_corpus
from launcher.deployment import LocalDeployment
from launcher.flwr_cli import TINY_AUDIO_RUN

pytestmark = pytest.mark.federation
TASKS = ("speech-words", "sound-pitch", "sound-timbre")
RUN = {**TINY_AUDIO_RUN, "transport-scope": "model"}


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    corpus = root / "corpus"
    rows = make_corpus(corpus, CorpusSpec(speakers=3, test_speakers=1, repeats=1, players=2, test_players=1, notes=1))
    mic = root / "mic"
    mic.mkdir()
    for row in rows[:40]:  # a device's recordings: plain files, no labels, two formats
        audio, rate = sf.read(corpus / row.path)
        sf.write(mic / (row.path.replace("/", "_")[:-4] + (".flac" if len(list(mic.iterdir())) % 2 else ".wav")),
                 audio, rate)
    (mic / "broken.wav").write_bytes(b"RIFF....WAVE not really")
    nodes = [{"partition-id": 0, "num-partitions": 2}, {"partition-id": 1, "num-partitions": 2},
             {"data-dir": str(mic)}]
    with LocalDeployment(root / "fed", node_configs=nodes, env={"OMP_NUM_THREADS": "1"}) as fed:
        return fed.run({**RUN, "audio.corpus-dir": str(corpus)}, timeout=900)


def test_three_audio_clients_two_rounds_every_task_probed(audio_run):
    metrics = json.loads((audio_run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert [r["round"] for r in metrics["rounds"]] == [1, 2]
    for r in metrics["rounds"]:
        assert (r["sampled"], r["replied"], r["accepted"], r["failed"]) == (3, 3, 3, 0)
        assert set(r["knn"]) == set(TASKS) and r["loss"] > 0
        assert all(0.0 <= s <= 1.0 for s in r["knn"].values())
    assert set(metrics["baselines"]) == {"raw-log-mel", "random-init", "random-init-bn"}
    chance = {"speech-words": 1 / 35, "sound-pitch": 1 / 12, "sound-timbre": 1 / 8}
    for task in TASKS:  # the raw log-mel baseline is far above chance on every task: the tasks are learnable
        assert metrics["baselines"]["raw-log-mel"][task] > 2 * chance[task]
        assert (audio_run / "best" / f"{task}.pt").is_file()
        assert metrics["best"][task]["round"] in (0, 1, 2)
    assert set(metrics["rounds"][-1]["linear"]) == set(TASKS)


def test_final_audio_encoder_takes_the_raw_waveform(audio_run):
    encoder, meta = load_encoder(audio_run / "encoder.pt")
    assert meta["modality"] == "audio" and meta["round"] == 2
    samples = meta["frontend"]["num_samples"]
    assert meta["input"]["samples"] == samples == 12000
    wave = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (3, samples)).astype(np.float32))
    z = encoder(wave)
    assert z.shape == (3, meta["embedding_dim"]) and torch.isfinite(z).all()


def test_the_heads_travel_and_are_averaged_when_the_run_sends_the_whole_model(audio_run):
    from fedssl.config import RunConfig
    from fedssl.modality import MODALITIES
    from fedssl.ssl import build_ssl_model
    from fedssl.state import shared_arrays

    ckpt = torch.load(audio_run / "checkpoint.pt", map_location="cpu", weights_only=False)
    heads = sorted(k for k in ckpt["arrays"] if not k.startswith("backbone."))
    assert heads and all(k.startswith("projector.") for k in heads)
    cfg = RunConfig.from_flat({**RUN, "audio.corpus-dir": "unused"})
    torch.manual_seed(cfg.seed)  # the server's starting point, rebuilt
    start = shared_arrays(build_ssl_model(cfg.ssl, cfg.model, backbone=MODALITIES.get("audio").build_backbone(cfg)),
                          "model")
    assert set(start) == set(ckpt["arrays"])
    moved = [k for k in heads if not np.allclose(np.asarray(ckpt["arrays"][k]), start[k])]
    assert len(moved) >= len(heads) // 2  # trained on the devices, averaged by the server
