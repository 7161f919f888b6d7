"""Where gallery and query images come from, decoded in batches exactly as in training (numpy + Pillow).

Two sources: image files (a folder, recursively, or explicit paths; the label of
an image is its sub-folder below the folder given, ImageFolder-style) and the
Fashion-MNIST idx files. A file that cannot be used (missing, special, a
symlink loop, corrupt, over the pixel cap...) is recorded in ``skipped`` with
its reason and never stops the iteration.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fedssl.data.decode import DEFAULT_MAX_PIXELS
from fedssl.data.fashion_mnist import load_fashion_mnist  # numpy-only idx reader
from fedssl.data.image_folder import load_image, path_status, scan_folder  # the device training's own decoder
from fedssl.data.skips import SkipReason, SkipReport, UnusableImage

FASHION_MNIST_CLASSES = ("tshirt-top", "trouser", "pullover", "dress", "coat",
                         "sandal", "shirt", "sneaker", "bag", "ankle-boot")


@dataclass(frozen=True)
class ImageBatch:
    """Decoded uint8 images ``(n, C, H, W)`` with one path and one label ('' if unknown) each."""

    images: np.ndarray
    paths: list[str]
    labels: list[str]


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 ``(N, C, H, W)`` -> float32 ``(x / 255 - mean) / std`` per channel (training's ``normalize_transform``)."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (images.astype(np.float32) / np.float32(255.0) - m) / s


def fit_array(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 ``(N, C, h, w)`` arrays (e.g. Fashion-MNIST) resized bilinearly to ``size``; grey repeated for RGB."""
    if images.shape[-2:] != (size, size):
        images = np.stack([np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.BILINEAR))
                                     for c in img]) for img in images])
    if images.shape[1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=1)  # a grey image on an RGB model
    elif images.shape[1] != channels:
        raise ValueError(f"cannot feed {images.shape[1]}-channel images to a {channels}-channel model")
    return np.ascontiguousarray(images)


class FileImages:
    """Image files to decode: folders (searched recursively) and single files, in the order given."""

    def __init__(self, inputs: Sequence[str | Path], size: int, channels: int,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if max_pixels < 1:
            raise ValueError(f"max-pixels = {max_pixels} must be >= 1")
        self.size, self.channels, self.max_pixels = size, channels, max_pixels
        self.skipped = SkipReport()
        self.entries: list[tuple[Path, str]] = []
        for item in map(Path, inputs):
            st, problem = path_status(item)
            if problem is not None:
                self.skipped.add_error(str(item), problem)
            elif stat.S_ISDIR(st.st_mode):
                scan = scan_folder(item)
                self.skipped.extend(scan.skipped)
                self.entries += [(p, "" if p.parent == item else p.parent.relative_to(item).as_posix())
                                 for p in scan.files]
            elif stat.S_ISREG(st.st_mode):
                self.entries.append((item, ""))
            else:
                self.skipped.add(str(item), SkipReason.SPECIAL, "not a regular file or folder, never opened")

    def __len__(self) -> int:
        return len(self.entries)

    def batches(self, batch_size: int) -> Iterator[ImageBatch]:
        """Decoded batches of up to ``batch_size`` readable images; unusable ones go to ``skipped``."""
        if batch_size < 1:
            raise ValueError(f"batch size = {batch_size} must be >= 1")
        for start in range(0, len(self.entries), batch_size):
            images, paths, labels = [], [], []
            for path, label in self.entries[start:start + batch_size]:
                try:
                    images.append(load_image(path, self.size, self.channels, self.max_pixels))
                except UnusableImage as exc:
                    self.skipped.add_error(str(path), exc)
                    continue
                paths.append(str(path))
                labels.append(label)
            if images:
                yield ImageBatch(np.stack(images), paths, labels)


class FashionMnistImages:
    """Images ``offset .. offset+limit`` of a Fashion-MNIST split, labelled with class names."""

    def __init__(self, split: str, size: int, channels: int, offset: int = 0, limit: int = 0) -> None:
        images, labels = load_fashion_mnist(split)
        stop = len(images) if limit <= 0 else min(len(images), offset + limit)
        if not 0 <= offset < stop:
            raise ValueError(f"offset {offset} / limit {limit} select no image of the {len(images)} in {split!r}")
        self.split, self.offset = split, offset
        self.images, self.labels = images[offset:stop], labels[offset:stop]
        self.size, self.channels = size, channels
        self.skipped = SkipReport()

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, batch_size: int) -> Iterator[ImageBatch]:
        for start in range(0, len(self.images), batch_size):
            chunk = slice(start, start + batch_size)
            yield ImageBatch(fit_array(self.images[chunk], self.size, self.channels),
                             [f"fashion-mnist:{self.split}:{self.offset + i}"
                              for i in range(start, start + len(self.images[chunk]))],
                             [FASHION_MNIST_CLASSES[y] for y in self.labels[chunk]])
