"""Video encoders exported to ONNX: grey clips in, the same embedding out; fedssl-retrieve on video files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from export.cli import main
from export.parity import compare, onnx_embed
from export.retrieve.cli import main as retrieve
from export.video import INPUT_NAME, real_clips
from fedssl.checkpoint import load_encoder, save_encoder
from fedssl.config import RunConfig
from fedssl.data.video_corpus import CorpusSpec, make_corpus, write_video
from fedssl.modality import MODALITIES, build_backbone
from launcher.flwr_cli import VIDEO_RUN


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A trained-looking video encoder checkpoint: random weights with BatchNorm statistics from real-ish clips."""
    torch.manual_seed(0)
    cfg = RunConfig.from_flat(VIDEO_RUN)
    encoder = build_backbone(cfg)
    meta = MODALITIES.get("video").checkpoint_meta(cfg)
    clips = (real_clips(None, 48, meta, seed=0) * 255).round().astype(np.uint8)
    MODALITIES.get("video").calibrate(encoder, clips, cfg)
    path = tmp_path_factory.mktemp("ckpt") / "encoder.pt"
    save_encoder(path, encoder.state_dict(), cfg.model, round=3, run_id="r1", **meta)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, make_corpus(root, CorpusSpec(train_per_motion=3, test_per_motion=1))


def test_fedssl_export_writes_a_clip_model_matching_torch_and_an_int8_variant(checkpoint, corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "dist" / "encoder.onnx"
    assert main([str(checkpoint), "-o", str(out), "--quantize", "int8", "--video", str(root)]) == 0
    model = onnx.load(out)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["fedssl.modality"]) == "video" and json.loads(props["fedssl.frames"]) == 8
    assert [i.name for i in model.graph.input] == [INPUT_NAME]
    encoder, meta = load_encoder(checkpoint)
    clips = real_clips(str(root), 16, meta, seed=3)  # real MP4s through the device's reader
    assert clips.shape == (16, 8, 32, 32)
    with torch.no_grad():
        reference = encoder(torch.from_numpy(clips)).numpy()
    diff, cos = compare(reference, onnx_embed(out, clips))
    assert diff < 1e-4 and cos > 0.99999
    assert json.loads(out.with_suffix(".json").read_text())["parity"]["max_abs_diff"] < 1e-4
    int8 = out.with_name("encoder.int8.onnx")
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(int8).graph.node}
    assert int8.stat().st_size < 0.5 * out.stat().st_size  # int8 weights
    z8 = onnx_embed(int8, clips)
    cosines = (z8 * reference).sum(1) / np.linalg.norm(z8, axis=1) / np.linalg.norm(reference, axis=1)
    print(f"int8 vs torch cosine: mean {cosines.mean():.4f} min {cosines.min():.4f}")
    assert cosines.mean() > 0.9  # an untrained encoder: a sanity bound, not an accuracy claim
    assert json.loads(int8.with_suffix(".json").read_text())["precision"] == "int8"


def test_retrieve_indexes_and_queries_video_files(checkpoint, corpus, tmp_path, capsys):
    root, rows = corpus
    model = tmp_path / "video.onnx"
    assert main([str(checkpoint), "-o", str(model)]) == 0
    gallery = tmp_path / "gallery"
    for r in rows:
        (gallery / r.motion).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / r.path, gallery / r.motion / r.path.replace("/", "_"))
    (gallery / "right" / "broken.mp4").write_bytes(b"not a video")
    write_video(gallery / "up" / "short.mp4", np.zeros((3, 32, 32), np.uint8))
    index = tmp_path / "clips.npz"
    assert retrieve(["index", "--model", str(model), "--output", str(index), "--images", str(gallery),
                     "--no-progress"]) == 0
    assert f"indexed {len(rows)}" in capsys.readouterr().out
    query = gallery / rows[0].motion / rows[0].path.replace("/", "_")
    assert retrieve(["query", "--model", str(model), "--index", str(index), str(query), "-k", "3",
                     "--format", "json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    first = report["results"][0]["neighbours"][0]
    assert first["path"] == str(query) and first["score"] > 0.999 and first["label"] == rows[0].motion


def test_an_image_model_is_not_a_video_model(tmp_path):
    from export.retrieve.encoder import ModelError
    from export.retrieve.video import OnnxVideoEncoder

    path = tmp_path / "x.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), path)
    with pytest.raises(ModelError, match="not a video encoder"):
        OnnxVideoEncoder(path)
