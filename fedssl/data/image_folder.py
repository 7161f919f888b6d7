"""A real device's own unlabeled images (camera roll, sensor dumps), read from a folder tree.

The walk follows symlinked folders (a data folder often links in a camera's), but never twice
and never in a loop; it never opens what is not a regular file (a FIFO would block the walk).
Everything it cannot use is named with a reason in a :class:`~fedssl.data.skips.SkipReport`;
files without an image suffix are only counted (camera folders hold sidecar files).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedssl.data.decode import DEFAULT_MAX_PIXELS, load_image
from fedssl.data.skips import SkipReason, SkipReport, UnusableImage

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
__all__ = ["IMAGE_SUFFIXES", "FolderImages", "FolderScan", "list_images", "load_image", "load_image_folder",
           "path_status", "scan_folder"]


@dataclass
class FolderScan:
    """What a walk found: image files to decode, what it skipped, and how many other files it ignored."""

    files: list[Path]
    skipped: SkipReport
    ignored: int = 0


@dataclass
class FolderImages:
    """Decoded images ``(N, C, size, size)`` uint8, their paths, and every file that could not be used."""

    images: np.ndarray
    paths: list[str]
    skipped: SkipReport = field(default_factory=SkipReport)
    ignored: int = 0


def _special_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"))
    return next((name for test, name in kinds if test(mode)), f"file of mode {stat.filemode(mode)}")


def path_status(path: str | Path) -> tuple[os.stat_result | None, UnusableImage | None]:
    """``stat`` of ``path`` (following links), or why it cannot be used: missing, broken link, loop, unreadable.

    Only ``stat``/``lstat`` are called: nothing is opened.
    """
    try:
        return os.stat(path), None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, UnusableImage(SkipReason.LOOP, "the symlink resolves to itself")
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and os.path.islink(path):
            target = os.readlink(path)
            return None, UnusableImage(SkipReason.BROKEN_LINK, f"points to {target}, which does not exist")
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None, UnusableImage(SkipReason.MISSING, "no such file or folder")
        return None, UnusableImage(SkipReason.UNREADABLE, exc.strerror or str(exc))


def scan_folder(root: str | Path) -> FolderScan:
    """Image files under ``root`` (recursively, sorted for reproducibility) and what was skipped on the way.

    Raises:
        FileNotFoundError: if ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    top = os.stat(root)
    files: list[Path] = []
    skipped, ignored = SkipReport(), 0
    visited = {(top.st_dev, top.st_ino)}
    stack: list[tuple[Path, tuple[tuple[int, int], ...]]] = [(root, ((top.st_dev, top.st_ino),))]
    while stack:  # iterative: a deep tree cannot exhaust Python's recursion limit
        folder, ancestors = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.add(str(folder), SkipReason.UNREADABLE, f"folder: {exc.strerror or exc}")
            continue
        for entry in entries:
            path = Path(entry.path)
            st, problem = path_status(path)
            if problem is not None:
                skipped.add_error(str(path), problem)
            elif stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    skipped.add(str(path), SkipReason.LOOP, "leads back to a folder above it")
                elif key in visited:
                    skipped.add(str(path), SkipReason.DUPLICATE_DIR, "already walked through another path")
                else:
                    visited.add(key)
                    stack.append((path, (*ancestors, key)))
            elif not stat.S_ISREG(st.st_mode):
                skipped.add(str(path), SkipReason.SPECIAL, f"{_special_kind(st.st_mode)}, never opened")
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                ignored += 1
            elif st.st_size == 0:
                skipped.add(str(path), SkipReason.EMPTY, "0 bytes")
            else:
                files.append(path)
    skipped.files.sort(key=lambda f: f.path)
    return FolderScan(sorted(files), skipped, ignored)


def list_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (see :func:`scan_folder`, which also says what was skipped)."""
    return scan_folder(root).files


def load_image_folder(root: str | Path, size: int, channels: int, limit: int = 0,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> FolderImages:
    """Decode every usable image; each skipped file is named with its reason and logged, never fatal.

    Raises:
        FileNotFoundError: if the folder is missing.
        ValueError: if it holds no usable image, or ``max_pixels`` < 1.
    """
    if max_pixels < 1:
        raise ValueError(f"max-image-pixels = {max_pixels} must be >= 1")
    scan = scan_folder(root)
    paths = scan.files[:limit] if limit else scan.files
    images, kept, skipped = [], [], SkipReport(list(scan.skipped.files))
    for path in paths:
        try:
            images.append(load_image(path, size, channels, max_pixels))
            kept.append(str(path))
        except UnusableImage as exc:
            skipped.add_error(str(path), exc)
    skipped.log(log, f"image folder {root}")
    if not images:
        raise ValueError(f"no readable image in {root}: {skipped.summary() if skipped else 'no image file found'}")
    log.info("read %d image(s) from %s (skipped %d %s, ignored %d non-image file(s))",
             len(images), root, len(skipped), skipped.counts(), scan.ignored)
    return FolderImages(np.stack(images), kept, skipped, scan.ignored)
