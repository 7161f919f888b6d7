"""Image decoding by pixel mode: real files of each mode written with Pillow, decoded values asserted.

Images are written at the model's size (no resize) unless a test is about resizing, so each
expected value is the mode's rule applied to one pixel.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedssl.data.decode import DEFAULT_MAX_PIXELS, load_image
from fedssl.data.skips import SkipReason, UnusableImage


def decode(path: Path, channels: int = 1, **kw) -> np.ndarray:
    with Image.open(path) as img:
        size = img.width
    return load_image(path, size, channels, **kw)


def reason(path: Path, **kw) -> UnusableImage:
    with pytest.raises(UnusableImage) as info:
        load_image(path, 4, 1, **kw)
    return info.value


# --- 8-bit: unchanged -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["L", "RGB", "1"])
@pytest.mark.parametrize("channels", [1, 3])
def test_8bit_images_decode_exactly_as_before(tmp_path, mode, channels):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    img = Image.fromarray(pixels, "RGB").convert(mode)
    img.save(tmp_path / "x.png")
    before = Image.open(tmp_path / "x.png").convert("L" if channels == 1 else "RGB").resize((28, 28), Image.BILINEAR)
    expected = np.asarray(before)[None] if channels == 1 else np.asarray(before).transpose(2, 0, 1)
    np.testing.assert_array_equal(load_image(tmp_path / "x.png", 28, channels), expected)


# --- high bit depth: scaled, not clipped -----------------------------------------------------------
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grey_is_scaled_by_1_over_257(tmp_path, suffix):
    values = np.array([[0, 257, 1000, 32896], [40000, 65278, 65535, 128]] * 2, dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / f"x{suffix}")
    assert Image.open(tmp_path / f"x{suffix}").mode == "I;16"
    out = decode(tmp_path / f"x{suffix}")
    np.testing.assert_array_equal(out[0], np.rint(values / 257.0).astype(np.uint8))
    assert out[0, 0].tolist() == [0, 1, 4, 128]  # Pillow's own convert("L") gives [0, 255, 255, 255]
    rgb = decode(tmp_path / f"x{suffix}", channels=3)
    assert rgb.shape == (3, 4, 4) and (rgb == out).all()  # grey repeated for an RGB model


def test_16bit_pgm_with_a_12bit_maxval_uses_the_full_range(tmp_path):
    data = np.array([0, 1024, 2048, 4095] * 4, dtype=">u2")
    (tmp_path / "x.pgm").write_bytes(b"P5 4 4 4095\n" + data.tobytes())
    assert Image.open(tmp_path / "x.pgm").mode == "I"  # Pillow rescales maxval to 65535
    out = decode(tmp_path / "x.pgm")[0, 0].tolist()
    assert out[0] == 0 and out[3] == 255 and out[2] == pytest.approx(2048 / 4095 * 255, abs=1)
    assert out[1] == pytest.approx(1024 / 4095 * 255, abs=1)


def test_32bit_integer_grey_outside_16_bits_fits_its_own_range(tmp_path):
    values = np.array([[-70000, 0, 70000, 35000]] * 4, dtype=np.int32)
    Image.fromarray(values).save(tmp_path / "x.tif")
    assert Image.open(tmp_path / "x.tif").mode == "I"
    out = decode(tmp_path / "x.tif")[0, 0].tolist()
    assert out == [0, 128, 255, 191]  # (x + 70000) / 140000 * 255, rounded


@pytest.mark.parametrize(("values", "expected"), [
    ([0.0, 0.25, 0.5, 1.0], [0, 64, 128, 255]),  # the [0, 1] convention: x * 255
    ([-1.0, 0.0, 0.5, 1.0], [0, 128, 191, 255]),  # [-1, 1]: its own range
    ([0.0, 1.0, 2.0, 4.0], [0, 64, 128, 255]),  # HDR above 1: its own range
    ([0.5, 0.5, 0.5, 0.5], [128, 128, 128, 128]),  # constant inside [0, 1] keeps its level
])
def test_float_images_map_their_range_not_clip(tmp_path, values, expected):
    Image.fromarray(np.array([values] * 4, dtype=np.float32)).save(tmp_path / "x.tif")
    assert Image.open(tmp_path / "x.tif").mode == "F"
    assert decode(tmp_path / "x.tif")[0, 0].tolist() == expected


def test_float_images_with_nan_or_inf_are_skipped_not_guessed(tmp_path):
    for bad in (np.nan, np.inf):
        values = np.full((4, 4), 0.5, dtype=np.float32)
        values[1, 2] = bad
        Image.fromarray(values).save(tmp_path / "x.tif")
        err = reason(tmp_path / "x.tif")
        assert err.reason is SkipReason.NON_FINITE and "1 NaN/inf pixel" in str(err)


# --- palette, CMYK, LAB ------------------------------------------------------------------------
def test_palette_images_use_their_palette(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([10, 200, 30, 250, 0, 0] + [0] * 762)
    img.putpixel((1, 0), 1)
    img.save(tmp_path / "p.png")
    img.save(tmp_path / "p.gif")
    for name in ("p.png", "p.gif"):
        rgb = decode(tmp_path / name, channels=3)
        assert rgb[:, 0, 0].tolist() == [10, 200, 30] and rgb[:, 0, 1].tolist() == [250, 0, 0]
        grey = decode(tmp_path / name)
        assert grey[0, 0, 0] == round((10 * 299 + 200 * 587 + 30 * 114) / 1000)  # ITU-R 601-2 luma


def test_cmyk_is_converted_to_rgb(tmp_path):
    img = Image.new("CMYK", (4, 4), (0, 0, 0, 0))  # no ink: white
    img.putpixel((1, 0), (0, 255, 255, 0))  # magenta + yellow: red
    img.putpixel((2, 0), (0, 0, 0, 255))  # black ink
    img.putpixel((3, 0), (255, 0, 0, 0))  # cyan
    img.save(tmp_path / "c.tif")
    rgb = decode(tmp_path / "c.tif", channels=3)
    assert [rgb[:, 0, i].tolist() for i in range(4)] == [[255, 255, 255], [255, 0, 0], [0, 0, 0], [0, 255, 255]]
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    np.testing.assert_allclose(decode(tmp_path / "c.jpg", channels=3)[:, 8, 8], [255, 0, 0], atol=3)


def test_lab_is_converted_to_srgb(tmp_path):
    img = Image.new("LAB", (4, 4), (255, 128, 128))  # L* 100, a* b* 0: white
    img.putpixel((1, 0), (0, 128, 128))  # L* 0: black
    try:
        img.save(tmp_path / "x.tif")
    except OSError:
        pytest.skip("this Pillow cannot write LAB TIFFs")
    grey = decode(tmp_path / "x.tif")
    assert grey[0, 0, 0] >= 250 and grey[0, 0, 1] <= 5


# --- alpha ----------------------------------------------------------------------------------------
def test_alpha_is_composited_on_black(tmp_path):
    la = Image.new("LA", (4, 4), (200, 255))
    la.putpixel((1, 0), (200, 128))
    la.putpixel((2, 0), (255, 0))  # fully transparent white: hidden colour must not show
    la.save(tmp_path / "la.png")
    assert decode(tmp_path / "la.png")[0, 0, :3].tolist() == [200, 100, 0]  # 200 * 128 / 255 = 100.4

    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 255, 0, 64))
    rgba.putpixel((2, 0), (255, 255, 255, 0))
    rgba.save(tmp_path / "rgba.png")
    out = decode(tmp_path / "rgba.png", channels=3)
    assert [out[:, 0, i].tolist() for i in range(3)] == [[255, 0, 0], [0, 64, 0], [0, 0, 0]]


def test_transparent_palette_and_grey_colour_keys_are_composited(tmp_path):
    p = Image.new("P", (4, 4), 0)
    p.putpalette([255, 255, 255, 0, 0, 255] + [0] * 762)
    p.putpixel((1, 0), 1)
    p.save(tmp_path / "p.png", transparency=0)  # palette entry 0 (white) is transparent
    rgb = decode(tmp_path / "p.png", channels=3)
    assert rgb[:, 0, 0].tolist() == [0, 0, 0] and rgb[:, 0, 1].tolist() == [0, 0, 255]
    grey = Image.new("L", (4, 4), 90)
    grey.putpixel((0, 0), 7)
    grey.save(tmp_path / "l.png", transparency=90)  # tRNS: grey 90 is transparent
    assert decode(tmp_path / "l.png")[0, 0, :2].tolist() == [7, 0]


def test_resizing_with_alpha_does_not_bleed_hidden_colours(tmp_path):
    outputs = []
    for hidden in (0, 255):
        pixels = np.zeros((8, 8, 4), dtype=np.uint8)
        pixels[:, :4] = (200, 200, 200, 255)  # left half opaque
        pixels[:, 4:] = (hidden, hidden, hidden, 0)  # right half transparent, with a hidden colour
        Image.fromarray(pixels, "RGBA").save(tmp_path / f"x{hidden}.png")
        outputs.append(load_image(tmp_path / f"x{hidden}.png", 4, 1)[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])  # premultiplied resize: hidden colours never count
    assert (outputs[0][:, 0] == 200).all() and (outputs[0][:, 3] == 0).all()


# --- pixel cap --------------------------------------------------------------------------------------
def png_header_only(path: Path, width: int, height: int) -> Path:
    """A 1x1 grey PNG whose header claims ``width x height``: decoding it would fail (or eat memory)."""
    Image.new("L", (1, 1), 0).save(path)
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return path


def test_pixel_cap_is_checked_from_the_header_before_decoding(tmp_path):
    big = png_header_only(tmp_path / "big.png", 9000, 9000)  # 81 M pixels; the data holds one row of one
    assert Image.open(big).size == (9000, 9000)
    err = reason(big)  # the default cap: without the header check this would be "corrupt" (truncated data)
    assert err.reason is SkipReason.TOO_LARGE and "9000x9000 = 81,000,000 pixels" in str(err)
    assert f"{DEFAULT_MAX_PIXELS:,}" in str(err)
    Image.new("L", (30, 20), 9).save(tmp_path / "small.png")
    assert reason(tmp_path / "small.png", max_pixels=599).reason is SkipReason.TOO_LARGE
    assert load_image(tmp_path / "small.png", 4, 1, max_pixels=600).shape == (1, 4, 4)


def test_pillows_decompression_bomb_error_is_a_skip_too(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 20000, 20000)  # over 2x Image.MAX_IMAGE_PIXELS
    err = reason(bomb)  # Image.open refuses it before our own check can
    assert err.reason is SkipReason.TOO_LARGE and "decompression-bomb" in str(err)


# --- not images -----------------------------------------------------------------------------------
def test_files_of_other_formats_or_broken_data_are_corrupt(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.pdf")  # Pillow reads PDFs? Not in our format list
    (tmp_path / "x.png").write_bytes((tmp_path / "x.pdf").read_bytes())
    assert reason(tmp_path / "x.png").reason is SkipReason.CORRUPT
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) - 30])
    assert reason(tmp_path / "cut.png").reason is SkipReason.CORRUPT
    (tmp_path / "empty.png").write_bytes(b"")
    assert reason(tmp_path / "empty.png").reason is SkipReason.EMPTY
    assert reason(tmp_path / "missing.png").reason is SkipReason.MISSING


@pytest.mark.parametrize(("mode", "channels"), [("RGBA", 1), ("RGBA", 3), ("LA", 1), ("LA", 3)])
def test_opaque_alpha_decodes_exactly_as_before(tmp_path, mode, channels):
    pixels = np.random.default_rng(1).integers(0, 256, (41, 57, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    Image.fromarray(pixels, "RGBA").convert(mode).save(tmp_path / "x.png")
    before = Image.open(tmp_path / "x.png").convert("L" if channels == 1 else "RGB").resize((28, 28), Image.BILINEAR)
    expected = np.asarray(before)[None] if channels == 1 else np.asarray(before).transpose(2, 0, 1)
    np.testing.assert_array_equal(load_image(tmp_path / "x.png", 28, channels), expected)
