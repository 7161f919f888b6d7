"""A gallery index: unit-length embeddings, their paths and labels, and the sha256 of the model that made them.

Stored as one ``.npz`` (no pickles). Embeddings of two different models live
in different spaces, so an index refuses to be queried with any model whose
hash differs from the one it was built with.
"""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from export.retrieve.encoder import OnnxEncoder
from export.retrieve.images import ImageBatch
from export.retrieve.search import l2_normalize, top_k
from fedssl.atomic import atomic_write_bytes
from fedssl.data.skips import SkipReason, SkipReport

FORMAT_VERSION = 1


class IndexFileError(ValueError):
    """The index file is missing or not an index written by this module."""


class ModelMismatchError(ValueError):
    """The index was built with another model than the one given."""


class ImageSource(Protocol):
    skipped: SkipReport

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[ImageBatch]: ...


def embed_source(encoder: OnnxEncoder, source: ImageSource, batch_size: int = 64,
                 progress: bool | None = None, desc: str = "embedding") -> tuple[np.ndarray, list[str], list[str]]:
    """Embed every readable image of ``source`` in batches; returns (unit embeddings (N, D), paths, labels).

    ``progress=None`` shows the bar only on a terminal. Unreadable files, and images whose embedding
    is NaN/inf (a broken model or input), end up in ``source.skipped``: nothing non-finite is returned.
    """
    if batch_size < 1:
        raise ValueError(f"batch size = {batch_size} must be >= 1")
    chunks, paths, labels = [], [], []
    with tqdm(total=len(source), unit="img", desc=desc, disable=None if progress is None else not progress,
              leave=False) as bar:
        for batch in source.batches(batch_size):
            emb = encoder.embed(batch.images)
            finite = np.isfinite(emb).all(axis=1)
            for i in np.flatnonzero(~finite):
                source.skipped.add(batch.paths[i], SkipReason.NON_FINITE,
                                   f"the model's embedding has {int((~np.isfinite(emb[i])).sum())} NaN/inf value(s)")
            chunks.append(l2_normalize(emb[finite]))
            paths += [p for p, ok in zip(batch.paths, finite) if ok]
            labels += [lab for lab, ok in zip(batch.labels, finite) if ok]
            bar.update(len(batch.paths))
            bar.set_postfix(skipped=len(source.skipped), refresh=False)
    dim = encoder.meta.embedding_dim
    return (np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)), paths, labels


@dataclass
class RetrievalIndex:
    embeddings: np.ndarray  # (N, dim) float32, unit rows
    paths: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) str, '' where unknown
    model_sha256: str
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, encoder: OnnxEncoder, source: ImageSource, batch_size: int = 64,
              progress: bool | None = None) -> RetrievalIndex:
        """Embed ``source`` with ``encoder``.

        Raises:
            ValueError: if not a single image of the source could be read.
        """
        emb, paths, labels = embed_source(encoder, source, batch_size, progress, desc="indexing")
        if not paths:
            why = source.skipped.summary() if source.skipped else "no image file given or found"
            raise ValueError(f"no readable image to index: {why}")
        info = {"model_file": encoder.path.name, "precision": encoder.meta.precision, "run_id": encoder.meta.run_id,
                "round": encoder.meta.round, "created": time.time(), "skipped": len(source.skipped),
                "skipped_by_reason": source.skipped.counts()}
        return cls(emb, np.asarray(paths), np.asarray(labels), encoder.sha256, info)

    def __len__(self) -> int:
        return len(self.embeddings)

    def check_model(self, encoder: OnnxEncoder) -> None:
        """Raises ModelMismatchError unless ``encoder`` is byte-identical to the model that built the index."""
        if encoder.sha256 != self.model_sha256:
            raise ModelMismatchError(
                f"the index was built with model sha256 {self.model_sha256[:16]}... "
                f"({self.info.get('model_file', '?')}), but {encoder.path} has sha256 {encoder.sha256[:16]}...; "
                "rebuild the index with 'fedssl-retrieve index' using this model")
        if self.embeddings.shape[1] != encoder.meta.embedding_dim:
            raise ModelMismatchError(f"the index holds {self.embeddings.shape[1]}-d embeddings but {encoder.path} "
                                     f"makes {encoder.meta.embedding_dim}-d ones")

    def search(self, queries: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` gallery items by cosine. Shape: (Q, dim) -> scores (Q, k), indices (Q, k)."""
        return top_k(l2_normalize(queries), self.embeddings, k)

    # --- file ---------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file, then rename).

        Raises:
            ValueError: if ``path`` is a folder or another non-regular file.
        """
        path = Path(path)
        if path.exists() and not path.is_file():
            raise ValueError(f"output {path} exists and is not a regular file (a folder?); give a file path")
        buffer = io.BytesIO()
        np.savez(buffer, embeddings=self.embeddings.astype(np.float32), paths=self.paths.astype(str),
                 labels=self.labels.astype(str), model_sha256=np.asarray(self.model_sha256),
                 info=np.asarray(json.dumps({"format_version": FORMAT_VERSION, **self.info})))
        atomic_write_bytes(path, buffer.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> RetrievalIndex:
        """Read and validate an index file.

        Raises:
            IndexFileError: if the file is missing, unreadable, of another format, or inconsistent
                (shapes, lengths, dtypes, non-finite or non-unit embeddings, a malformed model hash).
        """
        path = Path(path)
        if path.is_dir():
            raise IndexFileError(f"index {path} is a folder, not an index file")
        if path.exists() and not path.is_file():
            raise IndexFileError(f"index {path} is not a regular file (never opened)")
        if not path.is_file():
            raise IndexFileError(f"index {path} does not exist (build one with 'fedssl-retrieve index')")
        if not zipfile.is_zipfile(path):
            raise IndexFileError(f"{path} is not a retrieval index (an .npz written by 'fedssl-retrieve index')")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {key: z[key] for key in ("embeddings", "paths", "labels", "model_sha256", "info")}
            info = json.loads(str(arrays["info"]))
        except Exception as exc:  # zip, npy and json errors alike: the file is not ours
            raise IndexFileError(f"{path} is not a readable retrieval index: {exc}") from exc
        if not isinstance(info, dict) or info.get("format_version") != FORMAT_VERSION:
            version = info.get("format_version") if isinstance(info, dict) else None
            raise IndexFileError(f"{path}: index format {version} != {FORMAT_VERSION}")
        return cls(*_validated(path, arrays), info)


def _validated(path: Path, a: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """The arrays of an index file, checked against each other; raises IndexFileError naming the field."""
    emb = a["embeddings"]

    def bad(name: str, why: str) -> IndexFileError:
        return IndexFileError(f"{path}: inconsistent index, {name} {why}; rebuild it with 'fedssl-retrieve index'")

    if emb.ndim != 2 or emb.dtype.kind != "f" or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise bad("embeddings", f"must be a non-empty (N, dim) float array, got {emb.dtype} {emb.shape}")
    emb = emb.astype(np.float32)
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        raise bad("embeddings", f"have NaN/inf in {int((~finite).sum())} of {len(emb)} row(s)")
    norms = np.linalg.norm(emb, axis=1)
    if np.abs(norms - 1).max() > 1e-3:
        raise bad("embeddings", f"are not unit rows (norms {norms.min():.4g}..{norms.max():.4g})")
    for key in ("paths", "labels"):
        if a[key].shape != (len(emb),) or a[key].dtype.kind != "U":
            raise bad(key, f"must be {len(emb)} strings (one per embedding), got {a[key].dtype} {a[key].shape}")
    sha = a["model_sha256"]
    if sha.shape != () or sha.dtype.kind != "U" or not re.fullmatch(r"[0-9a-f]{64}", str(sha)):
        raise bad("model_sha256", "must be one sha256 hex digest")
    return emb, a["paths"], a["labels"], str(sha)
