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

from export.retrieve.media import MediaFiles, MediaModelMeta, OnnxMediaEncoder
from fedssl.data.audio import BadAudioError, list_audio, load_audio
from fedssl.data.skips import SkipReason


@dataclass(frozen=True, kw_only=True)
class AudioModelMeta(MediaModelMeta):
    """An audio model's meta and its input: mono waveforms of ``samples`` at ``sample_rate``."""

    sample_rate: int
    samples: int


class OnnxAudioEncoder(OnnxMediaEncoder):
    """An exported audio encoder in onnxruntime: float waveforms ``(N, samples)`` -> embeddings ``(N, D)``."""

    modality, kind, noun = "audio", "an audio encoder", "waveforms"

    def read_meta(self, props: dict[str, Any]) -> AudioModelMeta:
        return AudioModelMeta(sample_rate=int(props["sample_rate"]), samples=int(props["samples"]),
                              **AudioModelMeta.common(props, "waveforms"))

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
