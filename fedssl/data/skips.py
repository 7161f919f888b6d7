"""Why a file under an image folder was not used: one reason per file, named, counted, summarised.

A device's own folder is whatever its owner put there: corrupt or empty files,
dangling links, symlink loops, named pipes. None of them may stop training or
retrieval, and none may vanish silently: each lands in a :class:`SkipReport`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum


class SkipReason(StrEnum):
    """The reasons a file is skipped (values are what logs and JSON reports show)."""

    MISSING = "missing"  # named on the command line, not there
    BROKEN_LINK = "broken-symlink"  # a symlink whose target does not exist
    LOOP = "symlink-loop"  # a symlink that resolves to itself or to a folder above it
    DUPLICATE_DIR = "duplicate-folder"  # a folder already walked through another path (symlink)
    SPECIAL = "special-file"  # FIFO, socket or device: never opened (a FIFO would block)
    UNREADABLE = "unreadable"  # permission denied or another I/O error
    EMPTY = "empty"  # zero bytes
    TOO_LARGE = "too-many-pixels"  # over our pixel cap (checked from the header) or Pillow's bomb limit
    CORRUPT = "corrupt"  # not an image of a supported format, or its data does not decode
    UNSUPPORTED = "unsupported-mode"  # decodes, but to a pixel mode we cannot map to grey/RGB
    NON_FINITE = "non-finite"  # a float image with NaN/inf pixels, or a NaN/inf embedding
    TOO_SHORT = "too-short"  # an audio or video file shorter than the shortest clip a device keeps


class UnusableImage(ValueError):
    """One image file cannot be used; ``reason`` says why in a word, the message says the details."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: SkipReason
    detail: str = ""


@dataclass
class SkipReport:
    """Every skipped file with its reason, in the order met."""

    files: list[SkippedFile] = field(default_factory=list)

    def add(self, path: str, reason: SkipReason, detail: str = "") -> None:
        self.files.append(SkippedFile(str(path), SkipReason(reason), detail))

    def add_error(self, path: str, error: UnusableImage) -> None:
        self.add(path, error.reason, error.detail)

    def extend(self, other: SkipReport) -> None:
        self.files += other.files

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[SkippedFile]:
        return iter(self.files)

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    def counts(self) -> dict[str, int]:
        """Number of skipped files per reason, most frequent first."""
        return dict(Counter(f.reason.value for f in self.files).most_common())

    def summary(self, limit: int = 10) -> str:
        """One line: the total, the count per reason, and the first ``limit`` files with their reasons."""
        counts = ", ".join(f"{reason} {n}" for reason, n in self.counts().items())
        names = "; ".join(f"{f.path} ({f.reason.value}{': ' + f.detail if f.detail else ''})"
                          for f in self.files[:limit])
        more = f"; and {len(self.files) - limit} more" if len(self.files) > limit else ""
        return f"skipped {len(self.files)} file(s) [{counts}]: {names}{more}"

    def log(self, logger: logging.Logger, where: str) -> None:
        """A warning naming the skipped files (first 10 in the message, all at debug level)."""
        if self.files:
            logger.warning("%s: %s", where, self.summary())
            for f in self.files:
                logger.debug("skipped %s (%s: %s)", f.path, f.reason.value, f.detail)
