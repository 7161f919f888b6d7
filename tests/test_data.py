import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client_app.data import node_images
from export.retrieve.images import FileImages
from fedssl.config import RunConfig
from fedssl.data.digits import load_digits_images
from fedssl.data.fashion_mnist import DatasetMissingError, load_fashion_mnist
from fedssl.data.image_folder import load_image, load_image_folder
from fedssl.data.skips import SkipReason, UnusableImage


def test_fashion_mnist_comes_from_the_debian_package():
    x, y = load_fashion_mnist("train")
    xt, yt = load_fashion_mnist("test")
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [6000] * 10


def test_missing_dataset_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDSSL_FASHION_MNIST_DIR", str(tmp_path))
    load_fashion_mnist.cache_clear()
    with pytest.raises(DatasetMissingError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test")
    load_fashion_mnist.cache_clear()


def test_digits_probe_is_upsampled_and_light_on_dark():
    x, y = load_digits_images(28)
    assert x.shape == (1797, 1, 28, 28) and set(np.unique(y)) == set(range(10))
    assert x[:, :, :3, :].mean() < 5 and x[:, :, 10:18, 10:18].mean() > 60  # light object on a dark margin


def test_image_folder_skips_corrupt_files_and_counts_them(tmp_path):
    Image.new("RGB", (50, 40), (255, 0, 0)).save(tmp_path / "a.jpg")
    (tmp_path / "sub").mkdir()
    Image.new("L", (10, 10), 128).save(tmp_path / "sub" / "b.png")
    (tmp_path / "c.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "notes.txt").write_text("not an image")
    folder = load_image_folder(tmp_path, size=28, channels=1)
    assert folder.images.shape == (2, 1, 28, 28)
    assert [p.endswith("c.png") for p in folder.skipped.paths] == [True]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no readable image"):
        load_image_folder(bad, size=28, channels=3)
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "nope", size=28, channels=1)


# --- the folder walk: every skipped file named and counted, nothing blocks --------------------------
def _walk_in_thread(fn, timeout: float = 20.0):
    """Run ``fn`` in a thread; a walk that opened a FIFO would block forever, so fail instead of hanging."""
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except Exception as exc:  # re-raised in the test's thread
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the folder walk blocked (did it open a FIFO?)"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_image_folder_names_loops_links_and_special_files_without_blocking(tmp_path, caplog):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    Image.new("L", (8, 8), 10).save(root / "a.png")
    Image.new("L", (8, 8), 20).save(root / "sub" / "b.png")
    elsewhere = tmp_path / "camera"
    elsewhere.mkdir()
    Image.new("L", (8, 8), 30).save(elsewhere / "c.png")
    os.symlink(elsewhere, root / "linked")  # a linked-in folder is walked
    os.symlink(elsewhere, root / "sub" / "linked-again")  # ... but only once
    os.symlink(root, root / "sub" / "up")  # a loop back to the top
    os.symlink("self.png", root / "self.png")  # a link to itself
    os.symlink(tmp_path / "gone.png", root / "dangling.png")
    os.mkfifo(root / "pipe.png")
    os.mkfifo(root / "pipe")  # special files are named whatever their suffix
    os.symlink("/dev/null", root / "null.jpg")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "sock.png"))
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("a sidecar file")
    (root / "broken.jpg").write_bytes(b"not a jpeg")

    caplog.set_level(logging.WARNING, logger="fedssl.data.image_folder")
    folder = _walk_in_thread(lambda: load_image_folder(root, size=8, channels=1))
    server.close()
    assert folder.paths == [str(root / "a.png"), str(root / "linked" / "c.png"), str(root / "sub" / "b.png")]
    assert folder.images[:, 0, 0, 0].tolist() == [10, 30, 20]
    got = {Path(f.path).relative_to(root).as_posix(): f.reason.value for f in folder.skipped}
    assert got == {"sub/up": "symlink-loop", "self.png": "symlink-loop", "dangling.png": "broken-symlink",
                   "sub/linked-again": "duplicate-folder", "pipe.png": "special-file", "pipe": "special-file",
                   "null.jpg": "special-file", "sock.png": "special-file", "empty.png": "empty",
                   "broken.jpg": "corrupt"}
    assert folder.skipped.counts() == {"special-file": 4, "symlink-loop": 2, "broken-symlink": 1,
                                       "duplicate-folder": 1, "empty": 1, "corrupt": 1}
    assert folder.ignored == 1  # notes.txt: counted, not named
    details = {Path(f.path).name: f.detail for f in folder.skipped}
    assert "FIFO" in details["pipe.png"] and "socket" in details["sock.png"]
    assert "character device" in details["null.jpg"] and str(tmp_path / "gone.png") in details["dangling.png"]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "skipped 10 file(s) [special-file 4, symlink-loop 2" in warning and "pipe.png" in warning


def test_a_fifo_given_by_name_is_never_opened(tmp_path):
    os.mkfifo(tmp_path / "q.png")
    with pytest.raises(UnusableImage) as info:
        _walk_in_thread(lambda: load_image(tmp_path / "q.png", 8, 1))
    assert info.value.reason is SkipReason.SPECIAL
    source = _walk_in_thread(lambda: FileImages([tmp_path / "q.png", tmp_path / "none.png"], 8, 1))
    assert [(f.path, f.reason.value) for f in source.skipped] == [(str(tmp_path / "q.png"), "special-file"),
                                                                  (str(tmp_path / "none.png"), "missing")]


def test_image_folder_counts_files_over_the_pixel_cap(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    Image.new("RGB", (20, 20)).save(tmp_path / "small.png")
    folder = load_image_folder(tmp_path, size=8, channels=3, max_pixels=1000)
    assert folder.paths == [str(tmp_path / "small.png")]
    ((path, reason, detail),) = [(f.path, f.reason, f.detail) for f in folder.skipped]
    assert path == str(tmp_path / "big.png") and reason is SkipReason.TOO_LARGE and "40x30 = 1,200 pixels" in detail
    with pytest.raises(ValueError, match="max-image-pixels = 0"):
        load_image_folder(tmp_path, size=8, channels=3, max_pixels=0)


UNREADABLE_CHILD = """
import json, os, sys
from fedssl.data.image_folder import load_image_folder
from PIL import Image
Image.init()  # plugins imported before dropping privileges
if os.geteuid() == 0:  # root reads everything: become nobody
    os.setgid(65534)
    os.setuid(65534)
folder = load_image_folder(sys.argv[1], 8, 1)
print(json.dumps([folder.paths, [[f.path, f.reason.value, f.detail] for f in folder.skipped]]))
"""


def test_unreadable_files_and_folders_are_named():
    root = Path(tempfile.mkdtemp(prefix="fedssl-unreadable-", dir="/tmp"))  # reachable by 'nobody'
    try:
        root.chmod(0o755)
        Image.new("L", (8, 8)).save(root / "ok.png")
        Image.new("L", (8, 8)).save(root / "secret.png")
        (root / "secret.png").chmod(0)
        (root / "locked").mkdir()
        (root / "locked").chmod(0)
        out = subprocess.run([sys.executable, "-c", UNREADABLE_CHILD, str(root)], capture_output=True, text=True,
                             timeout=60, cwd=Path(__file__).resolve().parents[1])
        assert out.returncode == 0, out.stderr
        paths, skipped = json.loads(out.stdout)
        assert paths == [str(root / "ok.png")]
        assert skipped == [[str(root / "locked"), "unreadable", "folder: Permission denied"],
                           [str(root / "secret.png"), "unreadable", "Permission denied"]]
    finally:
        (root / "locked").chmod(0o755)
        shutil.rmtree(root)


def test_a_device_with_16bit_images_trains_on_scaled_pixels(tmp_path):
    """The loader that feeds device training (``data-dir``) decodes high-bit-depth images by value."""
    Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)).save(tmp_path / "mid.png")
    Image.fromarray(np.full((8, 8), 0.25, dtype=np.float32)).save(tmp_path / "quarter.tif")
    folder = load_image_folder(tmp_path, size=8, channels=1)
    assert folder.images[:, 0, 0, 0].tolist() == [128, 64]  # before: 255 (clipped) and 0 (truncated)


def test_a_device_sets_its_pixel_cap_in_its_node_config(tmp_path):
    Image.new("L", (40, 40), 50).save(tmp_path / "big.png")
    Image.new("L", (20, 20), 60).save(tmp_path / "small.png")
    cfg = RunConfig.from_flat({})
    assert len(node_images(cfg, {"data-dir": str(tmp_path)})) == 2  # default cap: 50 M pixels
    images = node_images(cfg, {"data-dir": str(tmp_path), "max-image-pixels": 1000})
    assert images.shape == (1, 1, 28, 28) and images[0, 0, 0, 0] == 60
    for bad in (0, -5, 2.5, "many"):
        with pytest.raises(ValueError, match="node config 'max-image-pixels'"):
            node_images(cfg, {"data-dir": str(tmp_path), "max-image-pixels": bad})
