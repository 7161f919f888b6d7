"""Audio and video for ``fedssl-retrieve``: an exported encoder that takes a float array, and files to decode.

What the two share: the model's ``metadata_props`` (written by :mod:`export.media`) say its
modality and input; the encoder checks each batch against that input and runs it as it is (no
image preprocessing); files come from folders (searched recursively; sub-folder names are labels)
or one by one, and a file that cannot be used is skipped with its reason, as for images. What
differs lives in :mod:`export.retrieve.audio` and :mod:`export.retrieve.video`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

from export.metadata import PREFIX, sha256_file
from export.retrieve.encoder import ModelError, _provider_options, check_model_path, choose_providers
from export.retrieve.images import ImageBatch
from fedssl.data.skips import SkipReason, SkipReport


def model_props(path: str | Path) -> dict[str, Any]:
    """The fedssl ``metadata_props`` of an ONNX model, JSON-decoded (empty if the model has none).

    Raises:
        ModelError: if the file is missing or not a readable ONNX model.
    """
    import onnx

    path = check_model_path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"model {path} is not a readable ONNX model: {exc}") from exc
    out = {}
    for prop in model.metadata_props:
        if prop.key.startswith(PREFIX):
            try:
                out[prop.key[len(PREFIX):]] = json.loads(prop.value)
            except json.JSONDecodeError:
                continue
    return out


@dataclass(frozen=True, kw_only=True)
class MediaModelMeta:
    """What an index records about the model (the fields :class:`RetrievalIndex` reads); subclasses add what input
    it takes."""

    embedding_dim: int
    precision: str = "fp32"
    run_id: str = ""
    round: int = 0
    input_name: str
    output_name: str = "embeddings"

    @staticmethod
    def common(props: dict[str, Any], input_name: str) -> dict[str, Any]:
        """These fields from a model's props (``input_name``: the default)."""
        return {"embedding_dim": int(props["embedding_dim"]), "precision": str(props.get("precision", "fp32")),
                "run_id": str(props.get("run_id", "")), "round": int(props.get("round", 0)),
                "input_name": str(props.get("input_name", input_name)),
                "output_name": str(props.get("output_name", "embeddings"))}


class OnnxMediaEncoder:
    """An exported audio or video encoder in onnxruntime: float inputs ``(N, *input_shape)`` -> ``(N, D)``.

    Subclasses name the ``modality`` they accept and read their ``meta`` from the model's props.

    Raises:
        ModelError: if the model is not one of this modality exported by fedssl-export.
    """

    modality: ClassVar[str]
    kind: ClassVar[str]  # "an audio encoder", in messages
    noun: ClassVar[str]  # "waveforms", in messages

    def __init__(self, path: str | Path, provider: str = "auto", threads: int = 0) -> None:
        self.path = Path(path)
        props = model_props(self.path)
        if props.get("modality") != self.modality:
            raise ModelError(f"model {self.path} is not {self.kind} exported by fedssl-export")
        self.meta = self.read_meta(props)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        providers = choose_providers(provider)
        self.session = ort.InferenceSession(str(self.path), options,
                                            providers=[(p, _provider_options(p)) for p in providers])
        self.sha256 = sha256_file(self.path)
        self.providers = self.session.get_providers()

    def read_meta(self, props: dict[str, Any]) -> MediaModelMeta:
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input's shape, without the batch axis."""
        raise NotImplementedError

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        """Shape: (N, *input_shape) float32 -> (N, embedding_dim) float32.

        Raises:
            ValueError: if the inputs do not have the model's shape.
        """
        shape = self.input_shape
        if inputs.ndim != 1 + len(shape) or inputs.shape[1:] != shape:
            raise ValueError(f"{self.noun} of shape {inputs.shape} do not fit the model's input "
                             f"(N, {', '.join(map(str, shape))})")
        out = self.session.run([self.meta.output_name], {self.meta.input_name: inputs.astype(np.float32)})[0]
        return out.astype(np.float32)


class MediaFiles:
    """Files to decode: folders (searched recursively; sub-folder names are labels) and single files.

    Subclasses decode one file in :meth:`load` and raise one of ``unusable`` for a file to skip.
    """

    unusable: ClassVar[tuple[type[Exception], ...]]

    def __init__(self, inputs: Sequence[str | Path], lister: Callable[[Path], list[Path]]) -> None:
        self.skipped = SkipReport()
        self.entries: list[tuple[Path, str]] = []
        for item in map(Path, inputs):
            if item.is_dir():
                self.entries += [(p, "" if p.parent == item else p.parent.relative_to(item).as_posix())
                                 for p in lister(item)]
            elif item.is_file():
                self.entries.append((item, ""))
            else:
                self.skipped.add(str(item), SkipReason.MISSING)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def skip(self, path: Path, exc: Exception) -> None:
        """Count ``path`` as skipped, for the reason ``exc`` (one of ``unusable``) gives."""
        raise NotImplementedError

    def batches(self, batch_size: int) -> Iterator[ImageBatch]:
        """Batches of float32 inputs ``(n, ...)`` (in an :class:`ImageBatch`, the index's batch type)."""
        for start in range(0, len(self.entries), batch_size):
            items, paths, labels = [], [], []
            for path, label in self.entries[start:start + batch_size]:
                try:
                    items.append(self.load(path))
                except self.unusable as exc:
                    self.skip(path, exc)
                    continue
                paths.append(str(path))
                labels.append(label)
            if items:
                yield ImageBatch(np.stack(items).astype(np.float32, copy=False), paths, labels)
