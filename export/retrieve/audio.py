"""Audio files for ``fedssl-retrieve``: an exported audio encoder (waveform in) and a source of audio files.

The model's metadata (written by :mod:`export.audio`) says ``modality: audio`` and gives the sample
rate and the number of samples it takes; each file is decoded with ``soundfile``, mixed down,
resampled (the device training's own reader, :mod:`fedssl.data.audio`) and its centre crop of that
length embedded. A file that cannot be decoded is skipped with its reason, as for images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from export.metadata import sha256_file
from export.retrieve.encoder import ModelError, OnnxEncoder, _provider_options, check_model_path, choose_providers
from export.retrieve.images import ImageBatch
from fedssl.data.audio import BadAudioError, list_audio, load_audio
from fedssl.data.skips import SkipReason, SkipReport

log = logging.getLogger(__name__)
PREFIX = "fedssl."


@dataclass(frozen=True)
class AudioModelMeta:
    """What an index records about the model (the fields :class:`RetrievalIndex` reads) and what input it takes."""

    embedding_dim: int
    sample_rate: int
    samples: int
    precision: str = "fp32"
    run_id: str = ""
    round: int = 0
    input_name: str = "waveforms"
    output_name: str = "embeddings"


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


class OnnxAudioEncoder:
    """An exported audio encoder in onnxruntime: float waveforms ``(N, samples)`` -> embeddings ``(N, D)``."""

    modality = "audio"

    def __init__(self, path: str | Path, provider: str = "auto", threads: int = 0) -> None:
        self.path = Path(path)
        props = model_props(self.path)
        if props.get("modality") != "audio":
            raise ModelError(f"model {self.path} is not an audio encoder exported by fedssl-export")
        self.meta = AudioModelMeta(int(props["embedding_dim"]), int(props["sample_rate"]), int(props["samples"]),
                                   str(props.get("precision", "fp32")), str(props.get("run_id", "")),
                                   int(props.get("round", 0)), str(props.get("input_name", "waveforms")),
                                   str(props.get("output_name", "embeddings")))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        providers = choose_providers(provider)
        self.session = ort.InferenceSession(str(self.path), options,
                                            providers=[(p, _provider_options(p)) for p in providers])
        self.sha256 = sha256_file(self.path)
        self.providers = self.session.get_providers()

    def embed(self, waves: np.ndarray) -> np.ndarray:
        """Shape: (N, samples) float32 -> (N, embedding_dim) float32.

        Raises:
            ValueError: if the waveforms do not have the model's length.
        """
        if waves.ndim != 2 or waves.shape[1] != self.meta.samples:
            raise ValueError(f"waveforms of shape {waves.shape} do not fit the model's input (N, {self.meta.samples})")
        out = self.session.run([self.meta.output_name], {self.meta.input_name: waves.astype(np.float32)})[0]
        return out.astype(np.float32)


def open_encoder(path: str | Path, provider: str = "auto", threads: int = 0) -> OnnxEncoder | OnnxAudioEncoder:
    """The right encoder for an exported model: audio (waveform in), video (grey clips in) or image."""
    modality = model_props(path).get("modality")
    if modality == "audio":
        return OnnxAudioEncoder(path, provider, threads)
    if modality == "video":
        from export.retrieve.video import OnnxVideoEncoder  # it imports this module

        return OnnxVideoEncoder(path, provider, threads)
    return OnnxEncoder(path, provider, threads)


AUDIO_REASONS = {  # fedssl.data.audio's reasons, in the skip report's words
    "unreadable": SkipReason.CORRUPT, "empty": SkipReason.EMPTY, "too-short": SkipReason.TOO_SHORT,
    "not-finite": SkipReason.NON_FINITE,
}


class AudioFiles:
    """Audio files to decode: folders (searched recursively; sub-folder names are labels) and single files."""

    def __init__(self, inputs: Sequence[str | Path], sample_rate: int, samples: int) -> None:
        self.sample_rate, self.samples = sample_rate, samples
        self.skipped = SkipReport()
        self.entries: list[tuple[Path, str]] = []
        for item in map(Path, inputs):
            if item.is_dir():
                self.entries += [(p, "" if p.parent == item else p.parent.relative_to(item).as_posix())
                                 for p in list_audio(item)]
            elif item.is_file():
                self.entries.append((item, ""))
            else:
                self.skipped.add(str(item), SkipReason.MISSING)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, path: Path) -> np.ndarray:
        """The centre ``samples`` of a file (zero-padded if shorter). Raises :class:`BadAudioError`."""
        signal = load_audio(path, self.sample_rate)
        if len(signal) < self.samples:
            return np.pad(signal, (0, self.samples - len(signal)))
        start = (len(signal) - self.samples) // 2
        return signal[start:start + self.samples]

    def batches(self, batch_size: int) -> Iterator[ImageBatch]:
        """Batches of waveforms ``(n, samples)`` (in an :class:`ImageBatch`, the index's batch type)."""
        for start in range(0, len(self.entries), batch_size):
            waves, paths, labels = [], [], []
            for path, label in self.entries[start:start + batch_size]:
                try:
                    waves.append(self.load(path))
                except BadAudioError as exc:
                    self.skipped.add(str(path), AUDIO_REASONS.get(exc.reason, SkipReason.CORRUPT), str(exc))
                    continue
                paths.append(str(path))
                labels.append(label)
            if waves:
                yield ImageBatch(np.stack(waves).astype(np.float32), paths, labels)
