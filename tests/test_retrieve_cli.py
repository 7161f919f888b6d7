"""``fedssl-retrieve`` on hostile input: one-line errors with exit 2, never a traceback; JSON always valid.

Every case runs the real CLI (its ``main`` with an argv, or ``python -m``) against a real exported
ONNX encoder, real image files and real index files.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from PIL import Image

from export.metadata import PREFIX, EncoderMetadata
from export.onnx_export import export_encoder
from export.retrieve.cli import main
from export.retrieve.index import RetrievalIndex
from fedssl.checkpoint import load_encoder, save_encoder
from fedssl.config import ModelConfig
from fedssl.models.encoders import build_encoder

REPO = Path(__file__).resolve().parents[1]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``fedssl-retrieve argv`` (argparse's exit included)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("fedssl-retrieve: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)


def strict_json(text: str) -> dict:
    """``json.loads`` that refuses NaN/Infinity, which are not JSON."""
    def refuse(name: str) -> None:
        raise ValueError(f"invalid JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig()
    folder = tmp_path_factory.mktemp("model")
    save_encoder(folder / "encoder.pt", build_encoder(cfg).state_dict(), cfg, run_id="cli", round=1, knn={})
    encoder, meta = load_encoder(folder / "encoder.pt")
    return export_encoder(encoder, EncoderMetadata.from_checkpoint_meta(meta), folder / "encoder.onnx")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gallery")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(120, 256, (28, 28), dtype=np.uint8)).save(folder / f"bright{i}.png")
    for i in range(2):
        Image.fromarray(rng.integers(0, 30, (28, 28), dtype=np.uint8)).save(folder / f"dark{i}.png")
    return folder


@pytest.fixture(scope="module")
def index(model, gallery, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("index") / "g.npz"
    assert main(["index", "--model", str(model), "--images", str(gallery), "-o", str(path), "--no-progress"]) == 0
    return path


# --- arguments -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "needle"), [
    (["--batch-size", "0"], "argument --batch-size: 0 must be >= 1"),
    (["--batch-size", "x"], "argument --batch-size: 'x' is not an integer"),
    (["--threads", "-1"], "argument --threads: -1 must be >= 0"),
    (["--max-pixels", "0"], "argument --max-pixels: 0 must be >= 1"),
    (["--limit", "-5"], "argument --limit: -5 must be >= 0"),
    (["--offset", "-1"], "argument --offset: -1 must be >= 0"),
    (["--provider", "tpu"], "argument --provider: invalid choice"),
])
def test_bad_numbers_are_one_line_errors(capsys, model, index, args, needle):
    code, out, err = cli(capsys, "index", "--model", str(model), "--fashion-mnist", "test", "-o", str(index), *args)
    assert_one_line_error(code, err, needle)
    code, out, err = cli(capsys, "query", "--model", str(model), "--index", str(index), "x.png", *args)
    assert_one_line_error(code, err, needle)
    assert out == ""


def test_k_must_be_positive_and_a_subcommand_is_required(capsys, model, index):
    assert_one_line_error(*cli(capsys, "query", "--model", str(model), "--index", str(index), "-k", "0", "x")[::2],
                          "argument -k: 0 must be >= 1")
    assert_one_line_error(*cli(capsys)[::2], "required: command")


def test_output_that_is_a_folder_or_below_a_file_fails_before_embedding(capsys, model, gallery, tmp_path):
    code, _, err = cli(capsys, "index", "--model", str(model), "--images", str(gallery), "-o", str(tmp_path))
    assert_one_line_error(code, err, f"--output {tmp_path} is a folder", "gallery.npz")
    (tmp_path / "file").write_text("x")
    code, _, err = cli(capsys, "index", "--model", str(model), "--images", str(gallery),
                       "-o", str(tmp_path / "file" / "g.npz"))
    assert_one_line_error(code, err, "is a file, not a folder")
    os.mkfifo(tmp_path / "fifo.npz")
    code, _, err = cli(capsys, "index", "--model", str(model), "--images", str(gallery),
                       "-o", str(tmp_path / "fifo.npz"))
    assert_one_line_error(code, err, "exists and is not a regular file")


def test_a_folder_or_a_foreign_file_as_model_or_index(capsys, model, index, gallery, tmp_path):
    query = str(gallery / "bright0.png")
    assert_one_line_error(*cli(capsys, "query", "--model", str(tmp_path), "--index", str(index), query)[::2],
                          "is a folder, not a model file")
    assert_one_line_error(*cli(capsys, "query", "--model", str(model), "--index", str(tmp_path), query)[::2],
                          "is a folder, not an index file")
    assert_one_line_error(*cli(capsys, "query", "--model", str(index), "--index", str(index), query)[::2],
                          "not a readable ONNX model")
    os.mkfifo(tmp_path / "fifo.npz")
    assert_one_line_error(*cli(capsys, "query", "--model", str(model), "--index", str(tmp_path / "fifo.npz"),
                               query)[::2], "is not a regular file (never opened)")
    assert_one_line_error(*cli(capsys, "query", "--model", str(tmp_path / "fifo.npz"), "--index", str(index),
                               query)[::2], "is not a regular file (never opened)")


# --- index contents -----------------------------------------------------------------------------
def rewrite(index: Path, out: Path, **changes) -> Path:
    with np.load(index) as z:
        arrays = {k: z[k] for k in z.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez(out, **arrays)
    return out


def test_an_index_that_loads_but_is_inconsistent_is_refused_in_one_line(capsys, model, index, gallery, tmp_path):
    good = RetrievalIndex.load(index)
    n, dim = good.embeddings.shape
    nan = good.embeddings.copy()
    nan[2, 5] = np.nan
    info = json.loads(str(np.load(index)["info"]))
    cases = {
        f"paths must be {n} strings": dict(paths=good.paths[:-1]),
        f"labels must be {n} strings": dict(labels=np.zeros(n, np.int64)),
        f"embeddings have NaN/inf in 1 of {n} row(s)": dict(embeddings=nan),
        "embeddings must be a non-empty (N, dim) float array": dict(embeddings=good.embeddings[0]),
        "embeddings are not unit rows": dict(embeddings=good.embeddings * 2),
        "model_sha256 must be one sha256 hex digest": dict(model_sha256=np.asarray("abc")),
        "index format None != 1": dict(info=np.asarray(json.dumps([1, 2]))),
        "is not a readable retrieval index": dict(labels=None),
        f"the index holds {dim - 1}-d embeddings": dict(
            embeddings=good.embeddings[:, 1:] / np.linalg.norm(good.embeddings[:, 1:], axis=1, keepdims=True)),
        "no such file": dict(info=np.asarray(json.dumps({**info, "format_version": 1}))),  # valid: a control
    }
    assert n == 8
    for i, (needle, change) in enumerate(cases.items()):
        bad = rewrite(index, tmp_path / f"bad{i}.npz", **change)
        code, out, err = cli(capsys, "query", "--model", str(model), "--index", str(bad), "--format", "json",
                             str(tmp_path / "no such file.png"), str(gallery / "bright1.png"))
        if needle == "no such file":
            assert code == 0 and strict_json(out)["skipped"][0]["reason"] == "missing", err
            continue
        assert_one_line_error(code, err, needle)
        assert out == ""


# --- models whose output is broken ----------------------------------------------------------------
def nan_for_dark_images(model: Path, out: Path) -> Path:
    """The same encoder, times sqrt(mean of the normalised input): NaN for dark images, finite for bright."""
    m = onnx.load(model)
    g = m.graph
    name = g.output[0].name
    for node in g.node:
        node.output[:] = ["raw" if o == name else o for o in node.output]
    g.initializer.extend([numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes123"),
                          numpy_helper.from_array(np.array([1], np.int64), "axis1")])
    g.node.extend([
        helper.make_node("ReduceMean", [g.input[0].name, "axes123"], ["mean"], keepdims=0),
        helper.make_node("Unsqueeze", ["mean", "axis1"], ["mean1"]),
        helper.make_node("Sqrt", ["mean1"], ["gate"]),
        helper.make_node("Mul", ["raw", "gate"], [name]),
    ])
    onnx.save(m, out)
    return out


def test_nan_embeddings_are_skipped_and_named_and_json_stays_valid(capsys, model, gallery, tmp_path):
    nan_model = nan_for_dark_images(model, tmp_path / "nan.onnx")
    index = tmp_path / "g.npz"
    code, out, err = cli(capsys, "index", "--model", str(nan_model), "--images", str(gallery), "-o", str(index))
    assert code == 0, err
    assert "skipped 2 file(s) [non-finite 2]" in err and "dark0.png" in err and "dark1.png" in err
    assert len(RetrievalIndex.load(index)) == 6

    code, out, err = cli(capsys, "query", "--model", str(nan_model), "--index", str(index), "--format", "json",
                         str(gallery / "dark0.png"), str(gallery / "bright3.png"))
    assert code == 0, err
    report = strict_json(out)
    assert [r["query"] for r in report["results"]] == [str(gallery / "bright3.png")]
    assert report["results"][0]["neighbours"][0]["path"] == str(gallery / "bright3.png")
    assert all(math.isfinite(n["score"]) for n in report["results"][0]["neighbours"])
    assert report["skipped"] == [{"path": str(gallery / "dark0.png"), "reason": "non-finite",
                                  "detail": report["skipped"][0]["detail"]}]
    assert "NaN/inf" in report["skipped"][0]["detail"] and report["skipped_by_reason"] == {"non-finite": 1}

    code, out, err = cli(capsys, "query", "--model", str(nan_model), "--index", str(index), str(gallery / "dark1.png"))
    assert code == 1 and "no readable query image" in err and out == ""


def with_props(model: Path, out: Path, **props: str) -> Path:
    m = onnx.load(model)
    for p in m.metadata_props:
        if p.key[len(PREFIX):] in props:
            p.value = props[p.key[len(PREFIX):]]
    onnx.save(m, out)
    return out


def test_models_whose_metadata_lies_fail_in_one_line(capsys, model, gallery, tmp_path):
    cases = {
        "not (1, 7) floats as its metadata says": with_props(model, tmp_path / "dim.onnx", embedding_dim="7"),
        "failed on a batch of shape (1, 1, 32, 32)": with_props(model, tmp_path / "hw.onnx", height="32", width="32"),
        "channels = 2 must be 1 or 3": with_props(model, tmp_path / "c.onnx", channels="2", mean="[0, 0]",
                                                  std="[1, 1]"),
        "height 28 != width 30": with_props(model, tmp_path / "sq.onnx", width="30"),
        "std > 0": with_props(model, tmp_path / "std.onnx", std="[0.0]"),
        "has no output 'features'": with_props(model, tmp_path / "out.onnx", output_name='"features"'),
    }
    for needle, bad in cases.items():
        code, out, err = cli(capsys, "index", "--model", str(bad), "--images", str(gallery / "bright0.png"),
                             "-o", str(tmp_path / "x.npz"), "--batch-size", "1")
        assert_one_line_error(code, err, needle)
        assert not (tmp_path / "x.npz").exists()


# --- images ---------------------------------------------------------------------------------------
def test_pixel_cap_and_16bit_queries_through_the_cli(capsys, model, index, gallery, tmp_path):
    grey = np.asarray(Image.open(gallery / "bright2.png"), dtype=np.uint16)
    Image.fromarray(grey * 257).save(tmp_path / "deep.png")  # the same picture at 16 bits
    Image.new("L", (100, 100), 200).save(tmp_path / "large.png")
    code, out, err = cli(capsys, "query", "--model", str(model), "--index", str(index), "--format", "json",
                         "--max-pixels", "5000", "-k", "1", str(tmp_path / "deep.png"), str(tmp_path / "large.png"))
    assert code == 0, err
    report = strict_json(out)
    (hit,) = report["results"][0]["neighbours"]
    assert hit["path"] == str(gallery / "bright2.png") and hit["score"] == pytest.approx(1.0, abs=1e-5)
    assert [(s["path"], s["reason"]) for s in report["skipped"]] == [(str(tmp_path / "large.png"), "too-many-pixels")]
    assert "100x100 = 10,000 pixels is over the cap of 5,000" in report["skipped"][0]["detail"]


def test_file_names_that_are_not_utf8_print_in_text_and_json(capsys, model, index, gallery, tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: a surrogate escape in Python
    (tmp_path / name).write_bytes((gallery / "bright4.png").read_bytes())
    for fmt in ("text", "json"):
        result = subprocess.run([sys.executable, "-m", "export.retrieve.cli", "query", "--model", str(model),
                                 "--index", str(index), "--format", fmt, "-k", "1", os.fsencode(tmp_path / name)],
                                cwd=REPO, capture_output=True, timeout=120, env={**os.environ, "PYTHONIOENCODING": ""})
        assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
        text = result.stdout.decode("utf-8")
        if fmt == "json":
            assert strict_json(text)["results"][0]["neighbours"][0]["path"] == str(gallery / "bright4.png")
        assert "caf\\udce9.png" in text


def test_the_installed_entry_point_answers_in_one_line(model, tmp_path):
    result = subprocess.run([sys.executable, "-m", "export.retrieve.cli", "index", "--model", str(model),
                             "--fashion-mnist", "test", "--batch-size", "0", "-o", str(tmp_path / "g.npz")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == ["fedssl-retrieve: error: argument --batch-size: 0 must be >= 1 "
                                          "(see fedssl-retrieve index --help)"]
