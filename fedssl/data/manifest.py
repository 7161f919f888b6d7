"""The ``manifest.csv`` of a generated clip corpus (audio, video): one row per clip file with its labels and split.

The generators (:mod:`fedssl.data.audio_corpus`, :mod:`fedssl.data.video_corpus`) write it, and
readers rebuild their row dataclasses from it; a missing manifest names the script that makes one.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

MANIFEST = "manifest.csv"
Row = TypeVar("Row")


def write_manifest(root: Path, rows: Sequence[Any], fields: Sequence[str]) -> None:
    """``root/manifest.csv``: a header of ``fields``, then each row's values of them."""
    with open(root / MANIFEST, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        writer.writerows([[getattr(r, name) for name in fields] for r in rows])


def read_rows(root: str | Path, row: Callable[..., Row], fields: Sequence[str], modality: str) -> list[Row]:
    """The rows of ``root/manifest.csv``, each ``row(**{field: value})``.

    Raises:
        FileNotFoundError: naming the script that makes the ``modality`` corpus.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {modality} corpus at {root} ({MANIFEST} missing); make one with "
                                f"'python scripts/make_{modality}_corpus.py {root}'")
    with open(path, newline="") as f:
        return [row(**{k: r[k] for k in fields}) for r in csv.DictReader(f)]
