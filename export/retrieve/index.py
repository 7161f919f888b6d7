"""A gallery index: unit-length embeddings, their paths and labels, and the sha256 of the model that made them.

Stored as one ``.npz`` (no pickles). Embeddings of two different models live
in different spaces, so an index refuses to be queried with any model whose
hash differs from the one it was built with.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from export.retrieve.encoder import OnnxEncoder
from export.retrieve.images import ImageBatch, Skipped
from export.retrieve.search import l2_normalize, top_k
from fedssl.atomic import atomic_write_bytes

FORMAT_VERSION = 1


class IndexFileError(ValueError):
    """The index file is missing or not an index written by this module."""


class ModelMismatchError(ValueError):
    """The index was built with another model than the one given."""


class ImageSource(Protocol):
    skipped: Skipped

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[ImageBatch]: ...


def embed_source(encoder: OnnxEncoder, source: ImageSource, batch_size: int = 64,
                 progress: bool | None = None, desc: str = "embedding") -> tuple[np.ndarray, list[str], list[str]]:
    """Embed every readable image of ``source`` in batches; returns (unit embeddings (N, D), paths, labels).

    ``progress=None`` shows the bar only on a terminal. Unreadable files end up in ``source.skipped``.
    """
    chunks, paths, labels = [], [], []
    with tqdm(total=len(source), unit="img", desc=desc, disable=None if progress is None else not progress,
              leave=False) as bar:
        for batch in source.batches(batch_size):
            chunks.append(l2_normalize(encoder.embed(batch.images)))
            paths += batch.paths
            labels += batch.labels
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
            raise ValueError(f"no readable image to index ({len(source.skipped)} skipped)")
        info = {"model_file": encoder.path.name, "precision": encoder.meta.precision, "run_id": encoder.meta.run_id,
                "round": encoder.meta.round, "created": time.time(), "skipped": len(source.skipped)}
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

    def search(self, queries: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` gallery items by cosine. Shape: (Q, dim) -> scores (Q, k), indices (Q, k)."""
        return top_k(l2_normalize(queries), self.embeddings, k)

    # --- file ---------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write atomically (temporary file, then rename)."""
        path = Path(path)
        buffer = io.BytesIO()
        np.savez(buffer, embeddings=self.embeddings.astype(np.float32), paths=self.paths.astype(str),
                 labels=self.labels.astype(str), model_sha256=np.asarray(self.model_sha256),
                 info=np.asarray(json.dumps({"format_version": FORMAT_VERSION, **self.info})))
        atomic_write_bytes(path, buffer.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> RetrievalIndex:
        """Raises IndexFileError if the file is missing, unreadable or of another format."""
        path = Path(path)
        if not path.is_file():
            raise IndexFileError(f"index {path} does not exist (build one with 'fedssl-retrieve index')")
        if not zipfile.is_zipfile(path):
            raise IndexFileError(f"{path} is not a retrieval index (an .npz written by 'fedssl-retrieve index')")
        try:
            with np.load(path, allow_pickle=False) as z:
                info = json.loads(str(z["info"]))
                index = cls(z["embeddings"], z["paths"], z["labels"], str(z["model_sha256"]), info)
        except Exception as exc:  # zip, npy and json errors alike: the file is not ours
            raise IndexFileError(f"{path} is not a readable retrieval index: {exc}") from exc
        if info.get("format_version") != FORMAT_VERSION:
            raise IndexFileError(f"{path}: index format {info.get('format_version')} != {FORMAT_VERSION}")
        return index
