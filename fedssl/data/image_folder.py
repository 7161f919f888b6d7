"""A real device's own unlabeled images (camera roll, sensor dumps), read from a folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}


@dataclass
class FolderImages:
    """Decoded images ``(N, C, size, size)`` uint8, their paths, and what could not be read."""

    images: np.ndarray
    paths: list[str]
    skipped: list[str] = field(default_factory=list)


def list_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursively), sorted for reproducibility.

    Raises:
        FileNotFoundError: if ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as ``(channels, size, size)`` uint8; raises ``OSError``/``ValueError`` if unreadable."""
    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB").resize((size, size), Image.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def load_image_folder(root: str | Path, size: int, channels: int, limit: int = 0) -> FolderImages:
    """Decode every readable image; corrupt files are skipped and counted, never fatal.

    Raises:
        FileNotFoundError: if the folder is missing.
        ValueError: if it holds no readable image.
    """
    paths = list_images(root)
    if limit:
        paths = paths[:limit]
    images, kept, skipped = [], [], []
    for path in paths:
        try:
            images.append(load_image(path, size, channels))
            kept.append(str(path))
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
            skipped.append(str(path))
    if skipped:
        log.warning("skipped %d unreadable image(s) in %s: %s", len(skipped), root, skipped[:10])
    if not images:
        raise ValueError(f"no readable image in {root} ({len(skipped)} skipped)")
    return FolderImages(np.stack(images), kept, skipped)
