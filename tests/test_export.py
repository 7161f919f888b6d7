"""End to end: a real federation trains an encoder, fedssl-export ships it, fedssl-retrieve finds neighbours.

The federation is the real thing (flower-superlink + 2 flower-supernode
processes, launcher/deployment.py), kept to one round on a few hundred images.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from export.metadata import EncoderMetadata, sha256_file
from export.parity import torch_embed
from export.retrieve.images import FASHION_MNIST_CLASSES
from export.retrieve.search import top1_label_agreement
from fedssl.checkpoint import load_encoder
from fedssl.data.fashion_mnist import load_fashion_mnist
from launcher.deployment import LocalDeployment
from launcher.flwr_cli import TINY_RUN

pytestmark = pytest.mark.federation
REPO = Path(__file__).resolve().parents[1]
FEDERATION = {**TINY_RUN, "num-rounds": 1}
GALLERY = slice(0, 2000)  # Fashion-MNIST test images in the index
QUERIES = slice(9000, 9500)  # other test images, written as PNG files and queried


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="session")
def federated_run(tmp_path_factory) -> Path:
    """``outputs/<run-id>`` of a real, finished federation (holds encoder.pt)."""
    with LocalDeployment(tmp_path_factory.mktemp("export-fed"), nodes=2) as fed:
        return fed.run(FEDERATION)


@pytest.fixture(scope="module")
def exported(federated_run, tmp_path_factory) -> Path:
    """fp32 + int8 + fp16 exports of the federated encoder, through the CLI."""
    out = tmp_path_factory.mktemp("dist") / "encoder.onnx"
    result = run_module("export.cli", str(federated_run), "-o", str(out), "--quantize", "int8", "--fp16",
                        "--eval-gallery", "2000", "--eval-queries", "500")
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_export_writes_checked_self_describing_models(federated_run, exported):
    _, ckpt = load_encoder(federated_run / "encoder.pt")
    assert sorted(p.name for p in exported.parent.iterdir()) == [
        "encoder.fp16.json", "encoder.fp16.onnx", "encoder.int8.json", "encoder.int8.onnx",
        "encoder.json", "encoder.onnx"]  # one file per model: no external .data
    for precision, name in (("fp32", "encoder"), ("int8", "encoder.int8"), ("fp16", "encoder.fp16")):
        model = onnx.load(exported.parent / f"{name}.onnx")
        meta = EncoderMetadata.from_props({p.key: p.value for p in model.metadata_props})
        assert meta.precision == precision
        assert (meta.channels, meta.height, meta.embedding_dim) == (1, 28, ckpt["embedding_dim"])
        assert list(meta.mean) == ckpt["input"]["mean"] and list(meta.std) == ckpt["input"]["std"]
        assert (meta.run_id, meta.round, meta.knn) == (ckpt["run_id"], ckpt["round"], ckpt["knn"])
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
        sidecar = json.loads((exported.parent / f"{name}.json").read_text())
        assert sidecar["sha256"] == sha256_file(exported.parent / f"{name}.onnx")
        assert sidecar["run_id"] == ckpt["run_id"] and sidecar["precision"] == precision
        assert set(sidecar["retrieval"]["change_vs_fp32_points"]) == {"top1", "knn"}
    parity = json.loads((exported.parent / "encoder.json").read_text())["parity"]
    assert parity["ok"] and parity["max_abs_diff"] <= 1e-4 and parity["min_cosine"] >= 0.9999
    int8 = json.loads((exported.parent / "encoder.int8.json").read_text())["retrieval"]
    assert int8["top1"] > 0.5  # chance is 0.1; int8 must not destroy retrieval


def test_retrieval_finds_same_class_neighbours_and_onnx_equals_torch(federated_run, exported, tmp_path):
    images, labels = load_fashion_mnist("test")
    index = tmp_path / "gallery.npz"
    out = run_module("export.retrieve.cli", "index", "--model", str(exported), "--fashion-mnist", "test",
                     "--offset", str(GALLERY.start), "--limit", str(GALLERY.stop - GALLERY.start), "-o", str(index))
    assert out.returncode == 0, out.stderr
    assert "indexed 2000 image(s)" in out.stdout

    query_dir = tmp_path / "queries"  # one sub-folder per class: the query's label
    for i in range(QUERIES.start, QUERIES.stop):
        (query_dir / FASHION_MNIST_CLASSES[labels[i]]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i, 0]).save(query_dir / FASHION_MNIST_CLASSES[labels[i]] / f"{i}.png")
    out = run_module("export.retrieve.cli", "query", "--model", str(exported), "--index", str(index), str(query_dir),
                     "-k", "5", "--format", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["results"]) == 500 and report["skipped"] == []
    onnx_top1 = report["top1_label_agreement"]
    assert onnx_top1 == np.mean([r["label"] == r["neighbours"][0]["label"] for r in report["results"]])
    assert onnx_top1 > 0.5  # far above chance (0.1)

    encoder, ckpt = load_encoder(federated_run / "encoder.pt")
    meta = EncoderMetadata.from_checkpoint_meta(ckpt)
    order = [int(Path(r["query"]).stem) for r in report["results"]]  # the CLI's query order
    torch_top1 = top1_label_agreement(torch_embed(encoder, images[GALLERY], meta), labels[GALLERY],
                                      torch_embed(encoder, images[order], meta), labels[order])
    assert abs(torch_top1 - onnx_top1) <= 0.005, (torch_top1, onnx_top1)


def test_an_index_refuses_the_int8_model_it_was_not_built_with(exported, tmp_path):
    index = tmp_path / "gallery.npz"
    assert run_module("export.retrieve.cli", "index", "--model", str(exported), "--fashion-mnist", "test",
                      "--limit", "100", "-o", str(index)).returncode == 0
    query = tmp_path / "q.png"
    Image.fromarray(load_fashion_mnist("test")[0][0, 0]).save(query)
    out = run_module("export.retrieve.cli", "query", "--model", str(exported.with_name("encoder.int8.onnx")),
                     "--index", str(index), str(query))
    assert out.returncode == 2 and "the index was built with model sha256" in out.stderr
