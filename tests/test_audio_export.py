"""Audio encoders exported to ONNX with the front end inside: raw waveform in, the same embedding out."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import soundfile as sf
import torch

from export.audio import INPUT_NAME, real_waves
from export.cli import main
from export.parity import compare, onnx_embed
from export.retrieve.cli import main as retrieve
from fedssl.checkpoint import load_encoder, save_encoder
from fedssl.config import RunConfig
from fedssl.modality import MODALITIES, build_backbone
from launcher.flwr_cli import AUDIO_RUN


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A trained-looking audio encoder checkpoint: random weights with BatchNorm statistics from real-ish clips."""
    torch.manual_seed(0)
    cfg = RunConfig.from_flat(AUDIO_RUN)
    encoder = build_backbone(cfg)
    meta = MODALITIES.get("audio").checkpoint_meta(cfg)
    waves = real_waves(None, 64, {"frontend": meta["frontend"]}, seed=0)
    MODALITIES.get("audio").calibrate(encoder, waves, cfg)
    path = tmp_path_factory.mktemp("ckpt") / "encoder.pt"
    save_encoder(path, encoder.state_dict(), cfg.model, round=3, run_id="r1", **meta)
    return path


def test_checkpoint_rebuilds_the_waveform_encoder(checkpoint):
    encoder, meta = load_encoder(checkpoint)
    assert meta["modality"] == "audio" and meta["input"]["layout"] == "NT"
    assert encoder(torch.zeros(2, meta["frontend"]["num_samples"])).shape == (2, meta["embedding_dim"])


def test_fedssl_export_writes_a_waveform_model_matching_torch_and_an_int8_variant(checkpoint, tmp_path):
    mic = tmp_path / "mic"
    mic.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(22050) / 22050
    for i in range(12):  # real files at another rate, so parity covers the reader too
        tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t) + rng.normal(0, 0.01, len(t))
        sf.write(mic / f"clip{i}.wav", tone, 22050)
    out = tmp_path / "dist" / "encoder.onnx"
    assert main([str(checkpoint), "-o", str(out), "--quantize", "int8", "--audio", str(mic)]) == 0
    model = onnx.load(out)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["fedssl.modality"]) == "audio"
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    encoder, meta = load_encoder(checkpoint)
    waves = real_waves(str(mic), 12, meta, seed=3)
    assert waves.shape == (12, 12000)
    with torch.no_grad():
        reference = encoder(torch.from_numpy(waves)).numpy()
    diff, cos = compare(reference, onnx_embed(out, waves))
    assert diff < 1e-3 and cos > 0.9999  # the STFT and mel filterbank run inside onnxruntime
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["parity"]["ok"] if "ok" in sidecar["parity"] else sidecar["parity"]["max_abs_diff"] < 1e-3
    int8 = out.with_name("encoder.int8.onnx")
    ops = {n.op_type for n in onnx.load(int8).graph.node}
    assert "QuantizeLinear" in ops and "DFT" in ops or "STFT" in ops  # quantised convs, float front end
    z8 = onnx_embed(int8, waves)
    cosines = (z8 * reference).sum(1) / np.linalg.norm(z8, axis=1) / np.linalg.norm(reference, axis=1)
    print(f"int8 vs torch cosine: mean {cosines.mean():.3f} min {cosines.min():.3f}")
    assert cosines.mean() > 0.7  # an untrained encoder: a sanity bound, not an accuracy claim
    assert json.loads(int8.with_suffix(".json").read_text())["precision"] == "int8"


def test_retrieve_indexes_and_queries_audio_files(checkpoint, tmp_path, capsys):
    model = tmp_path / "audio.onnx"
    assert main([str(checkpoint), "-o", str(model)]) == 0
    gallery = tmp_path / "gallery"
    t = np.arange(16000) / 16000
    rng = np.random.default_rng(1)
    for label, base in (("low", 150.0), ("high", 2500.0)):
        (gallery / label).mkdir(parents=True)
        for i in range(6):
            tone = 0.4 * np.sin(2 * np.pi * base * (1 + 0.03 * i) * t) + rng.normal(0, 0.005, len(t))
            sf.write(gallery / label / f"{label}{i}.wav", tone, 16000)
    (gallery / "low" / "broken.wav").write_bytes(b"not a wav")
    index = tmp_path / "sounds.npz"
    assert retrieve(["index", "--model", str(model), "--output", str(index), "--images", str(gallery),
                     "--no-progress"]) == 0
    assert "indexed 12" in capsys.readouterr().out
    query = gallery / "high" / "high3.wav"
    assert retrieve(["query", "--model", str(model), "--index", str(index), str(query), str(gallery / "low"),
                     "-k", "3", "--format", "json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    first = report["results"][0]
    assert first["neighbours"][0]["path"] == str(query) and first["neighbours"][0]["score"] > 0.999
    assert {r["reason"] for r in report["skipped"]} == {"corrupt"}  # not a WAV: the image word for it
    lows = [r for r in report["results"] if r["query"] != str(query)]
    assert len(lows) == 6 and all(n["label"] == "low" for r in lows for n in r["neighbours"][:1])
