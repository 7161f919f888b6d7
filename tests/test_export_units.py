"""Export and on-device retrieval on a randomly initialised encoder: parity, metadata, errors, no torch on device.

The end-to-end test on a federated encoder is tests/test_export.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from export import cli as export_cli
from export.metadata import EncoderMetadata, sha256_file
from export.onnx_export import export_encoder
from export.parity import ParityError, check_parity, torch_embed
from export.quantize import convert_fp16, quantize_int8
from export.retrieve import cli as retrieve_cli
from export.retrieve.encoder import ModelError, OnnxEncoder, choose_providers
from export.retrieve.images import FASHION_MNIST_CLASSES, FashionMnistImages, FileImages, normalize
from export.retrieve.index import IndexFileError, RetrievalIndex
from export.retrieve.search import knn_accuracy, top1_label_agreement, top_k
from fedssl.augment import normalize_transform
from fedssl.checkpoint import load_encoder, save_encoder
from fedssl.config import ModelConfig
from fedssl.data.fashion_mnist import load_fashion_mnist
from fedssl.knn import knn_top1
from fedssl.models.encoders import build_encoder

REPO = Path(__file__).resolve().parents[1]
TRAINED_KNN = {"fashion-mnist": 0.5}


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig()
    path = tmp_path_factory.mktemp("ckpt") / "encoder.pt"
    save_encoder(path, build_encoder(cfg).state_dict(), cfg, run_id="unit", round=3, knn=TRAINED_KNN)
    return path


@pytest.fixture(scope="module")
def exported(checkpoint) -> tuple[torch.nn.Module, EncoderMetadata, Path]:
    encoder, meta = load_encoder(checkpoint)
    device_meta = EncoderMetadata.from_checkpoint_meta(meta)
    return encoder, device_meta, export_encoder(encoder, device_meta, checkpoint.with_name("encoder.onnx"))


@pytest.fixture(scope="module")
def test_images() -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_fashion_mnist("test")
    return images, labels


def write_pngs(folder: Path, images: np.ndarray, labels: np.ndarray | None = None) -> list[Path]:
    paths = []
    for i, image in enumerate(images):
        sub = folder / (FASHION_MNIST_CLASSES[labels[i]] if labels is not None else "")
        sub.mkdir(parents=True, exist_ok=True)
        paths.append(sub / f"{i:05d}.png")
        Image.fromarray(image[0]).save(paths[-1])
    return paths


# --- metadata ------------------------------------------------------------------
def test_metadata_survives_onnx_props_and_matches_the_checkpoint(checkpoint, exported):
    _, meta, path = exported
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    back = EncoderMetadata.from_props(props)
    assert back == meta.with_precision("fp32")
    assert (back.channels, back.height, back.width, back.embedding_dim) == (1, 28, 28, ModelConfig().embedding_dim)
    assert back.mean == (0.2860,) and back.std == (0.3530,)
    assert (back.run_id, back.round, back.knn) == ("unit", 3, TRAINED_KNN)


def test_metadata_rejects_models_without_fedssl_props_and_bad_values():
    with pytest.raises(ValueError, match="no valid fedssl metadata"):
        EncoderMetadata.from_props({"other": "1"})
    with pytest.raises(ValueError, match="precision"):
        EncoderMetadata(1, 28, 28, (0.5,), (0.5,), 8, precision="int4")
    with pytest.raises(ValueError, match="channel"):
        EncoderMetadata(3, 28, 28, (0.5,), (0.5,), 8)


# --- export and parity -------------------------------------------------------------
def test_export_is_one_file_with_a_dynamic_batch_axis(exported):
    _, meta, path = exported
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith("encoder.onnx")) == ["encoder.onnx"]
    model = onnx.load(path, load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "images" and inp.type.tensor_type.shape.dim[0].dim_param
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [1, 28, 28]
    assert out.name == "embeddings" and out.type.tensor_type.shape.dim[1].dim_value == meta.embedding_dim


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_onnxruntime_matches_torch_for_any_batch_size(exported, test_images, batch):
    encoder, meta, path = exported
    images = test_images[0][:batch]
    ours = OnnxEncoder(path, "cpu").embed(images)
    theirs = torch_embed(encoder, images, meta)
    assert ours.shape == (batch, meta.embedding_dim)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_parity_check_passes_on_the_export_and_fails_loudly_on_another_model(exported, test_images):
    encoder, meta, path = exported
    report = check_parity(encoder, path, test_images[0][:64], meta)
    assert report.ok and report.max_abs_diff <= 1e-4 and report.min_cosine >= 0.9999
    other = build_encoder(ModelConfig())  # different random weights
    other.load_state_dict({k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
                           for k, v in encoder.state_dict().items()})
    with pytest.raises(ParityError, match=r"PARITY FAILED.*max \|diff\|") as info:
        check_parity(other.eval(), path, test_images[0][:64], meta)
    assert not info.value.report.ok and info.value.report.max_abs_diff > 1e-4


def test_preprocessing_equals_training():
    rng = np.random.default_rng(0)
    for channels, mean, std in ((1, (0.286,), (0.353,)), (3, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3))):
        images = rng.integers(0, 256, size=(4, channels, 9, 7), dtype=np.uint8)
        expected = torch.stack([normalize_transform(mean, std)(torch.from_numpy(im)) for im in images]).numpy()
        np.testing.assert_allclose(normalize(images, mean, std), expected, atol=1e-6)


# --- the export CLI -----------------------------------------------------------------
def test_export_cli_writes_nothing_and_exits_1_when_parity_fails(checkpoint, tmp_path, capsys):
    out = tmp_path / "dist" / "encoder.onnx"
    rc = export_cli.main([str(checkpoint), "-o", str(out), "--min-cosine", "1.5", "--eval-gallery", "0"])
    assert rc == 1 and "PARITY FAILED" in capsys.readouterr().err
    assert list(out.parent.iterdir()) == []


def test_export_cli_names_a_missing_or_foreign_checkpoint(tmp_path, capsys):
    assert export_cli.main([str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert export_cli.main([str(tmp_path / "junk.pt")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_int8_and_fp16_keep_metadata_io_and_stay_close(exported, test_images, tmp_path):
    encoder, meta, path = exported
    int8 = quantize_int8(path, tmp_path / "e.int8.onnx", load_fashion_mnist("train")[0][:256], meta)
    fp16 = convert_fp16(path, tmp_path / "e.fp16.onnx", meta)
    reference = torch_embed(encoder, test_images[0][:128], meta)
    for variant, file in (("int8", int8), ("fp16", fp16)):
        onnx.checker.check_model(onnx.load(file))
        model = OnnxEncoder(file, "cpu")
        assert model.meta == meta.with_precision(variant)
        out = model.embed(test_images[0][:128])
        assert out.dtype == np.float32 and out.shape == (128, meta.embedding_dim)
        cos = (out * reference).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)
        # int8 rounds the sparse block-3 map of the default read-out more coarsely than fp16 does
        assert cos.mean() > 0.98 and cos.min() > (0.99 if variant == "fp16" else 0.9), (variant, cos.min())
    assert int8.stat().st_size < 0.4 * path.stat().st_size and fp16.stat().st_size < 0.6 * path.stat().st_size


# --- search ----------------------------------------------------------------------------
@pytest.mark.parametrize("n,k", [(50, 1), (50, 7), (5, 10)])
def test_top_k_equals_a_full_sort(n, k):
    rng = np.random.default_rng(n + k)
    g = rng.normal(size=(n, 16)).astype(np.float32)
    q = rng.normal(size=(9, 16)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores, idx = top_k(q, g, k, chunk=4)
    expected = np.argsort(-(q @ g.T), axis=1)[:, :min(k, n)]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ g.T, expected, axis=1), rtol=1e-6)
    with pytest.raises(ValueError, match="k = 0"):
        top_k(q, g, 0)


@pytest.mark.parametrize("k", [1, 5, 200])
def test_knn_accuracy_equals_the_torch_reference(k):
    rng = np.random.default_rng(k)
    centres = rng.normal(size=(4, 8))
    gl, ql = rng.integers(0, 4, 300), rng.integers(0, 4, 80)
    g = (centres[gl] + rng.normal(size=(300, 8))).astype(np.float32)
    q = (centres[ql] + rng.normal(size=(80, 8))).astype(np.float32)
    ours = knn_accuracy(g, gl, q, ql, k=k, t=0.1)
    reference = knn_top1(torch.from_numpy(g), torch.from_numpy(gl), torch.from_numpy(q), torch.from_numpy(ql), k, 0.1)
    assert ours == pytest.approx(reference, abs=1e-6)  # torch averages in float32
    assert top1_label_agreement(g, gl, g, gl) == 1.0  # each item finds itself


# --- providers ---------------------------------------------------------------------------
def test_provider_choice_prefers_tensorrt_then_cuda_then_cpu():
    trt, cuda, cpu = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
    assert choose_providers("auto", [cpu, cuda, trt]) == [trt, cuda, cpu]
    assert choose_providers("auto", ["AzureExecutionProvider", cuda, cpu]) == [cuda, cpu]
    assert choose_providers("auto", ["AzureExecutionProvider", cpu]) == [cpu]
    assert choose_providers("cuda", [trt, cuda, cpu]) == [cuda, cpu]
    with pytest.raises(ValueError, match="not offered"):
        choose_providers("tensorrt", [cpu])
    with pytest.raises(ValueError, match="not one of"):
        choose_providers("tpu", [cpu])


# --- sources -------------------------------------------------------------------------------
def test_fashion_mnist_source_resizes_and_repeats_grey_for_rgb_models():
    source = FashionMnistImages("test", size=32, channels=3, offset=10, limit=5)
    (batch,) = list(source.batches(64))
    assert batch.images.shape == (5, 3, 32, 32) and batch.images.dtype == np.uint8
    assert batch.paths[0] == "fashion-mnist:test:10" and set(batch.labels) <= set(FASHION_MNIST_CLASSES)
    with pytest.raises(ValueError, match="select no image"):
        FashionMnistImages("test", 28, 1, offset=20000)


def test_corrupt_files_are_skipped_with_reasons(tmp_path, test_images):
    write_pngs(tmp_path, test_images[0][:3])
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG but not really")
    good = (tmp_path / "00000.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    source = FileImages([tmp_path, tmp_path / "missing.png"], size=28, channels=1)
    images = np.concatenate([b.images for b in source.batches(2)])
    assert images.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(images, test_images[0][:3])  # lossless round trip, same pixels
    skipped = {f.path: f.reason.value for f in source.skipped}
    assert skipped == {str(tmp_path / "garbage.png"): "corrupt", str(tmp_path / "truncated.png"): "corrupt",
                       str(tmp_path / "empty.jpg"): "empty", str(tmp_path / "missing.png"): "missing"}
    assert source.skipped.summary().startswith("skipped 4 file(s) [corrupt 2, ")


# --- the retrieve CLI (subprocesses: the device has no torch) --------------------------------------
def test_retrieve_index_and_query_never_import_torch(exported, tmp_path, test_images):
    _, _, model = exported
    queries = write_pngs(tmp_path / "q", test_images[0][:3])
    index = tmp_path / "g.npz"
    script = (
        "import sys\n"
        "from export.retrieve.cli import main\n"
        f"assert main(['index', '--model', {str(model)!r}, '--fashion-mnist', 'test', '--limit', '300',"
        f" '-o', {str(index)!r}, '--no-progress']) == 0\n"
        f"assert main(['query', '--model', {str(model)!r}, '--index', {str(index)!r}, {str(queries[0])!r},"
        " '--format', 'json', '--threads', '1']) == 0\n"
        "print('TORCH_LOADED' if 'torch' in sys.modules else 'NO_TORCH')\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO_TORCH")
    report = json.loads(out.stdout[out.stdout.index("{"):out.stdout.rindex("}") + 1])
    (result,) = report["results"]
    assert result["neighbours"][0] == {"rank": 1, "score": pytest.approx(1.0, abs=1e-5),
                                       "path": "fashion-mnist:test:0", "label": result["neighbours"][0]["label"]}


def test_index_and_query_skip_corrupt_images_and_report_them(exported, tmp_path, test_images):
    _, _, model = exported
    gallery = tmp_path / "gallery"
    write_pngs(gallery, test_images[0][:20], test_images[1][:20])
    (gallery / "bad.jpg").write_text("this is text, not a JPEG")
    (gallery / "trouser" / "cut.png").write_bytes((gallery / "trouser").glob("*.png").__next__().read_bytes()[:60])
    index = tmp_path / "g.npz"
    out = run_module("export.retrieve.cli", "index", "--model", str(model), "--images", str(gallery), "-o", str(index))
    assert out.returncode == 0, out.stderr
    assert "skipped 2 file(s) [corrupt 2]" in out.stderr and "bad.jpg" in out.stderr and "cut.png" in out.stderr
    loaded = RetrievalIndex.load(index)
    assert len(loaded) == 20 and loaded.model_sha256 == sha256_file(model)
    assert set(loaded.labels) == {FASHION_MNIST_CLASSES[y] for y in test_images[1][:20]}  # sub-folder names

    out = run_module("export.retrieve.cli", "query", "--model", str(model), "--index", str(index), "-k", "3",
                     "--format", "json", str(gallery / "bad.jpg"), *map(str, sorted(gallery.rglob("0000[0-4].png"))))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [s["path"] for s in report["skipped"]] == [str(gallery / "bad.jpg")]
    assert len(report["results"]) == 5 and all(len(r["neighbours"]) == 3 for r in report["results"])
    assert all(r["neighbours"][0]["path"] == r["query"] for r in report["results"])  # each finds itself
    assert all(r["neighbours"][0]["score"] >= r["neighbours"][1]["score"] for r in report["results"])

    out = run_module("export.retrieve.cli", "query", "--model", str(model), "--index", str(index),
                     str(gallery / "bad.jpg"))
    assert out.returncode == 1 and "no readable query image" in out.stderr


def test_missing_mismatched_or_foreign_models_and_indexes_give_clear_errors(exported, tmp_path, test_images):
    _, _, model = exported
    index = tmp_path / "g.npz"
    assert retrieve_cli.main(["index", "--model", str(model), "--fashion-mnist", "test", "--limit", "50",
                              "-o", str(index), "--no-progress"]) == 0
    query = write_pngs(tmp_path / "q", test_images[0][:1])[0]
    other = onnx.load(model)
    other.metadata_props.add(key="note", value="re-exported")  # same weights, different bytes
    onnx.save(other, tmp_path / "other.onnx")
    stripped = onnx.load(model)
    del stripped.metadata_props[:]
    onnx.save(stripped, tmp_path / "plain.onnx")
    (tmp_path / "text.onnx").write_text("hello")
    cases = {
        str(tmp_path / "other.onnx"): "the index was built with model sha256",
        str(tmp_path / "missing.onnx"): "missing.onnx does not exist",
        str(tmp_path / "plain.onnx"): "no valid fedssl metadata",
        str(tmp_path / "text.onnx"): "not a readable ONNX model",
    }
    for model_path, message in cases.items():
        out = run_module("export.retrieve.cli", "query", "--model", model_path, "--index", str(index), str(query))
        assert out.returncode == 2 and message in out.stderr, (model_path, out.stderr)
    for bad_index, message in ((tmp_path / "none.npz", "does not exist"), (model, "is not a retrieval index")):
        with pytest.raises(IndexFileError, match=message):
            RetrievalIndex.load(bad_index)
    with pytest.raises(ModelError, match="no valid fedssl metadata"):
        OnnxEncoder(tmp_path / "plain.onnx")
