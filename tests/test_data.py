import numpy as np
import pytest
from PIL import Image

from fedssl.data.digits import load_digits_images
from fedssl.data.fashion_mnist import DatasetMissingError, load_fashion_mnist
from fedssl.data.image_folder import load_image_folder


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
