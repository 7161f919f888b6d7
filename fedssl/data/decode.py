"""One image file -> ``(channels, size, size)`` uint8, the same for device training and retrieval.

Pixel modes are mapped to the model's 8-bit range by value, never clipped:

- ``1``, ``L``, ``RGB`` (8-bit): converted and resized exactly as before (Pillow's ITU-R 601-2 luma
  for RGB -> grey, grey repeated for RGB models).
- 16-bit grey (``I;16*``): the format's full range, ``x / 257`` (65535 -> 255), as Pillow already does
  for 16-bit RGB PNGs. A 12-bit sensor dump in a 16-bit container therefore stays dark, as in any
  viewer: one device's images keep one brightness scale, which a per-image stretch would not.
- 32-bit integer grey (``I``; Pillow also opens 16-bit PGM/PNG this way): the range
  ``[min(0, lo), max(65535, hi)]`` -> [0, 255], so 16-bit data maps as above and wider data is
  fitted to its own extremes.
- float grey (``F``): the range ``[min(0, lo), max(1, hi)]`` -> [0, 255]: the [0, 1] convention maps
  exactly (x * 255), [-1, 1] and HDR images fit their own range. NaN/inf pixels skip the file.
- alpha (``LA``, ``RGBA``, ``PA``, ``RGBa``, palette or grey with a transparent colour): composited
  over :data:`BACKGROUND` (black, the empty margin of the data sets the encoders train on), after a
  premultiplied-alpha resize so transparent pixels' hidden colours never bleed in. An alpha channel
  opaque everywhere is dropped, exactly as before.
- palette (``P``) through its palette; ``CMYK``, ``YCbCr``, ``HSV``, ``RGBX`` by Pillow's conversion
  (CMYK without colour management); ``LAB`` through LittleCMS to sRGB.

Pixel cap: ``Image.open`` reads only the header, so the size is checked against ``max_pixels``
before a single pixel is decoded (a 6 MB PNG of 13,300^2 pixels would take ~1 GB). Pillow's own
``DecompressionBombError`` (above 2 x ``Image.MAX_IMAGE_PIXELS``, raised to the cap when the cap is
higher) is reported the same way.
Files are opened with ``O_NONBLOCK`` and checked with ``fstat`` to be regular before any read, so a
FIFO swapped in after the folder walk cannot block.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fedssl.data.skips import SkipReason, UnusableImage

DEFAULT_MAX_PIXELS = 50_000_000  # a 50 MP phone photo (8160 x 6120); ~150 MB as RGB
BACKGROUND = 0  # grey level that transparent pixels become
FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "WEBP", "TIFF", "PPM")  # what IMAGE_SUFFIXES name (JPEG: MPO too)
ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}
INT16_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def open_regular(path: str | Path) -> io.BufferedReader:
    """Open ``path`` for reading only if it is a non-empty regular file (never blocks on a FIFO).

    Raises:
        UnusableImage: missing, special, empty or unreadable.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise UnusableImage(SkipReason.MISSING, exc.strerror or "no such file") from exc
    except OSError as exc:
        raise UnusableImage(SkipReason.UNREADABLE, exc.strerror or str(exc)) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnusableImage(SkipReason.SPECIAL, f"not a regular file (mode {stat.filemode(st.st_mode)})")
        if st.st_size == 0:
            raise UnusableImage(SkipReason.EMPTY, "0 bytes")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raises UnusableImage if ``width x height`` is empty or over ``max_pixels``."""
    if width <= 0 or height <= 0:
        raise UnusableImage(SkipReason.CORRUPT, f"header says {width}x{height} pixels")
    if max_pixels > 0 and width * height > max_pixels:
        raise UnusableImage(SkipReason.TOO_LARGE, f"{width}x{height} = {width * height:,} pixels is over the cap of "
                                                  f"{max_pixels:,} (max-image-pixels); the file was not decoded")


def load_image(path: str | Path, size: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS,
               background: int = BACKGROUND) -> np.ndarray:
    """One image file as ``(channels, size, size)`` uint8 (``channels`` 1 or 3).

    Raises:
        UnusableImage: with the reason (missing, special file, empty, unreadable, too many pixels,
            corrupt, unsupported mode, non-finite pixels).
    """
    Image.init()  # registers every plugin (once), so ``formats`` can name TIFF, WEBP...
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # a cap raised on purpose is not refused by Pillow's lower one
    with open_regular(path) as f:
        try:
            img = Image.open(f, formats=FORMATS)
        except Image.DecompressionBombError as exc:  # over 2x Pillow's limit: checked by Image.open itself
            raise UnusableImage(SkipReason.TOO_LARGE, f"{exc} (Pillow's decompression-bomb check)") from exc
        except UnidentifiedImageError as exc:
            raise UnusableImage(SkipReason.CORRUPT, f"not a {'/'.join(FORMATS)} image") from exc
        except Exception as exc:  # a plugin's header parser may raise anything on a hostile header
            raise UnusableImage(SkipReason.CORRUPT, f"{type(exc).__name__}: {exc}") from exc
        with img:
            check_pixels(img.width, img.height, max_pixels)
            try:
                return decode(img, size, channels, background)
            except UnusableImage:
                raise
            except MemoryError as exc:
                raise UnusableImage(SkipReason.TOO_LARGE, f"out of memory decoding {img.width}x{img.height}") from exc
            except Exception as exc:  # truncated data, bad chunks, decoder errors: the file is broken
                raise UnusableImage(SkipReason.CORRUPT, f"{type(exc).__name__}: {exc}") from exc


def decode(img: Image.Image, size: int, channels: int, background: int = BACKGROUND) -> np.ndarray:
    """An opened image as ``(channels, size, size)`` uint8, by the mode rules of this module's docstring."""
    if channels not in (1, 3):
        raise ValueError(f"channels = {channels} must be 1 or 3")
    target, mode = ("L" if channels == 1 else "RGB"), img.mode
    transparent = "transparency" in img.info and mode in ("1", "L", "RGB", "P")
    if mode in ("1", "L", "RGB") and not transparent:  # the common 8-bit path, unchanged
        out = img.convert(target).resize((size, size), Image.BILINEAR)
    elif mode in ALPHA_MODES or transparent:
        out = _composite(img, size, target, background)
    elif mode in INT16_MODES or mode == "I":
        out = _to_grey(_int_range(img), img.resize((size, size), Image.BILINEAR)).convert(target)
    elif mode == "F":
        out = _float_to_grey(img, size).convert(target)
    elif mode == "LAB":
        out = _lab_to_rgb(img).convert(target).resize((size, size), Image.BILINEAR)
    elif mode in ("P", "CMYK", "YCbCr", "HSV", "RGBX"):
        out = img.convert("RGB").convert(target).resize((size, size), Image.BILINEAR)
    else:
        raise UnusableImage(SkipReason.UNSUPPORTED, f"pixel mode {mode!r}")
    array = np.asarray(out, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _composite(img: Image.Image, size: int, target: str, background: int) -> Image.Image:
    """Resize with premultiplied alpha (Pillow does this for RGBA), then blend over ``background``.

    An alpha channel opaque everywhere (most RGBA screenshots) is dropped, as it always was.
    """
    rgba = img.convert("RGBA")
    if rgba.getchannel("A").getextrema() == (255, 255):
        return rgba.convert(target).resize((size, size), Image.BILINEAR)
    rgba = np.asarray(rgba.resize((size, size), Image.BILINEAR), dtype=np.float32)
    alpha = rgba[..., 3:] / 255.0
    rgb = rgba[..., :3] * alpha + np.float32(background) * (1.0 - alpha)
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB").convert(target)


def _int_range(img: Image.Image) -> tuple[float, float]:
    if img.mode in INT16_MODES:
        return 0.0, 65535.0
    lo, hi = img.getextrema()  # mode I: integers, no NaN
    return float(min(0, lo)), float(max(65535, hi))


def _to_grey(value_range: tuple[float, float], small: Image.Image) -> Image.Image:
    """``small``'s values, mapped linearly from ``value_range`` to [0, 255] and rounded."""
    lo, hi = value_range
    x = np.asarray(small, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint((x - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8), "L")


def _float_to_grey(img: Image.Image, size: int) -> Image.Image:
    x = np.asarray(img, dtype=np.float32)
    if not np.isfinite(x).all():
        raise UnusableImage(SkipReason.NON_FINITE, f"{int((~np.isfinite(x)).sum())} NaN/inf pixel(s)")
    value_range = (min(0.0, float(x.min())), max(1.0, float(x.max())))
    return _to_grey(value_range, img.resize((size, size), Image.BILINEAR))


def _lab_to_rgb(img: Image.Image) -> Image.Image:
    try:
        from PIL import ImageCms  # needs Pillow built with LittleCMS
    except ImportError as exc:
        raise UnusableImage(SkipReason.UNSUPPORTED, "LAB image and this Pillow has no LittleCMS") from exc
    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    return ImageCms.applyTransform(img, transform)
