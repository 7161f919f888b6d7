"""Audio files for ``fedssl-retrieve``: an exported audio encoder (waveform in) and a source of audio files.

The model's metadata (written by :mod:`export.audio`) says ``modality: audio`` and gives the sample
rate and the number of samples it takes; each file is decoded with ``soundfile``, mixed down,
resampled (the device training's own reader, :mod:`fedssl.data.audio`) and its centre crop of that
length embedded. A file that cannot be decoded is skipped with its reason, as for images. The parts
shared with video are in :mod:`export.retrieve.media`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.retrieve.media import MediaFiles, OnnxMediaEncoder, common_meta
from fedssl.data.audio import BadAudioError, list_audio, load_audio
from fedssl.data.skips import SkipReason


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


class OnnxAudioEncoder(OnnxMediaEncoder):
    """An exported audio encoder in onnxruntime: float waveforms ``(N, samples)`` -> embeddings ``(N, D)``."""

    modality, kind, noun = "audio", "an audio encoder", "waveforms"

    def read_meta(self, props: dict[str, Any]) -> AudioModelMeta:
        return AudioModelMeta(int(props["embedding_dim"]), int(props["sample_rate"]), int(props["samples"]),
                              **common_meta(props, "waveforms"))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.meta.samples,)


AUDIO_REASONS = {  # fedssl.data.audio's reasons, in the skip report's words
    "unreadable": SkipReason.CORRUPT, "empty": SkipReason.EMPTY, "too-short": SkipReason.TOO_SHORT,
    "not-finite": SkipReason.NON_FINITE,
}


class AudioFiles(MediaFiles):
    """Audio files to decode: folders (searched recursively; sub-folder names are labels) and single files."""

    unusable = (BadAudioError,)

    def __init__(self, inputs: Sequence[str | Path], sample_rate: int, samples: int) -> None:
        self.sample_rate, self.samples = sample_rate, samples
        super().__init__(inputs, list_audio)

    def load(self, path: Path) -> np.ndarray:
        """The centre ``samples`` of a file (zero-padded if shorter). Raises :class:`BadAudioError`."""
        signal = load_audio(path, self.sample_rate)
        if len(signal) < self.samples:
            return np.pad(signal, (0, self.samples - len(signal)))
        start = (len(signal) - self.samples) // 2
        return signal[start:start + self.samples]

    def skip(self, path: Path, exc: Exception) -> None:
        reason = AUDIO_REASONS.get(getattr(exc, "reason", ""), SkipReason.CORRUPT)
        self.skipped.add(str(path), reason, str(exc))
