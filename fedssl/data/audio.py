"""A device's own audio files (a microphone folder) read into fixed-length mono clips.

Files are decoded with ``soundfile`` (libsndfile: WAV, FLAC, OGG, AIFF), mixed down to mono
by averaging channels and resampled to the run's rate with scipy's polyphase filter
(``resample_poly``: an anti-aliasing FIR, exact for rational rate ratios such as 44.1k -> 16k).
A file shorter than a clip is zero-padded at the end; a longer one is cut into consecutive
clips (up to ``max_clips_per_file``). Corrupt, empty, too-short, non-finite or wrong-format
files are skipped and counted by reason, never fatal: one bad recording must not take a
device out of the federation.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif"}


class BadAudioError(ValueError):
    """A file that cannot become a clip; ``reason`` is one of unreadable/empty/too-short/not-finite."""

    def __init__(self, path: Path | str, reason: str, detail: str = "") -> None:
        super().__init__(f"{path}: {reason}{': ' + detail if detail else ''}")
        self.reason = reason


@dataclass
class FolderAudio:
    """Clips ``(N, samples)`` float32 in [-1, 1], the file each came from, and what was skipped."""

    clips: np.ndarray
    paths: list[str]
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> files

    @property
    def num_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling of a 1-D signal from ``rate`` to ``target`` Hz (float32)."""
    if rate == target:
        return np.asarray(audio, dtype=np.float32)
    g = gcd(int(rate), int(target))
    return resample_poly(np.asarray(audio, dtype=np.float64), target // g, rate // g).astype(np.float32)


def load_audio(path: str | Path, sample_rate: int, min_seconds: float = 0.0) -> np.ndarray:
    """One file as a mono float32 signal at ``sample_rate``.

    Raises:
        BadAudioError: unreadable (corrupt or not audio), empty, shorter than ``min_seconds``
            (after resampling) or holding NaN/inf samples.
    """
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as exc:
        raise BadAudioError(path, "unreadable", str(exc)[:120]) from None
    if audio.size == 0:
        raise BadAudioError(path, "empty")
    if not np.isfinite(audio).all():
        raise BadAudioError(path, "not-finite")
    mono = resample(audio.mean(axis=1), rate, sample_rate)
    if len(mono) < max(int(min_seconds * sample_rate), 1):
        raise BadAudioError(path, "too-short", f"{len(mono) / sample_rate:.3f} s < {min_seconds} s")
    return mono


def to_clips(signal: np.ndarray, clip_samples: int, max_clips: int = 8) -> np.ndarray:
    """Consecutive clips ``(k, clip_samples)`` of a signal; the last partial one is kept if at least
    half a clip (zero-padded), and a signal shorter than one clip becomes one padded clip."""
    if len(signal) <= clip_samples:
        return np.pad(signal, (0, clip_samples - len(signal)))[None]
    count = min(max_clips, len(signal) // clip_samples + (len(signal) % clip_samples >= clip_samples // 2))
    padded = np.pad(signal, (0, max(0, count * clip_samples - len(signal))))
    return padded[:count * clip_samples].reshape(count, clip_samples)


def list_audio(root: str | Path) -> list[Path]:
    """Audio files under ``root`` (recursively, by suffix), sorted for reproducibility.

    Raises:
        FileNotFoundError: if ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder {root} does not exist or is not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def load_clips(paths: list[Path], sample_rate: int, clip_seconds: float, min_seconds: float,
               max_clips_per_file: int = 8) -> FolderAudio:
    """Decode ``paths`` into clips; bad files are skipped and counted by reason."""
    clip_samples = int(round(clip_seconds * sample_rate))
    clips, kept, skipped = [], [], {}
    for path in paths:
        try:
            signal = load_audio(path, sample_rate, min_seconds)
        except BadAudioError as exc:
            skipped.setdefault(exc.reason, []).append(str(path))
            continue
        pieces = to_clips(signal, clip_samples, max_clips_per_file)
        clips.append(pieces)
        kept += [str(path)] * len(pieces)
    if skipped:
        log.warning("skipped %d audio file(s): %s", sum(map(len, skipped.values())),
                    dict(Counter({k: len(v) for k, v in skipped.items()})))
    stacked = np.concatenate(clips) if clips else np.zeros((0, clip_samples), dtype=np.float32)
    return FolderAudio(stacked.astype(np.float32), kept, skipped)


def load_audio_folder(root: str | Path, sample_rate: int, clip_seconds: float, min_seconds: float,
                      limit: int = 0, max_clips_per_file: int = 8) -> FolderAudio:
    """Every readable audio file under ``root`` as clips (a device's ``data-dir``).

    Raises:
        FileNotFoundError: if the folder is missing.
        ValueError: if it holds no usable audio file.
    """
    paths = list_audio(root)
    if limit:
        paths = paths[:limit]
    audio = load_clips(paths, sample_rate, clip_seconds, min_seconds, max_clips_per_file)
    if not len(audio.clips):
        raise ValueError(f"no usable audio file in {root} ({audio.num_skipped} skipped: "
                         f"{ {k: len(v) for k, v in audio.skipped.items()} })")
    return audio
