"""A labelled audio corpus made locally, offline: spoken words from espeak-ng and synthetic notes.

Nothing can be downloaded at run time, so the audio tasks are generated on the machine:

- ``speech``: digits and keywords (the Speech Commands vocabulary) spoken by ``espeak-ng`` with
  many voices x variants, each "speaker" with its own base pitch and speed, every utterance
  jittered in speed and pitch, placed at a random offset in a 1 s clip, with background noise
  at a random SNR and a random level. Task: which word (a semantic task).
- ``sound``: instrument-like notes synthesised in numpy (additive, plucked-string, bell, ...)
  x pitch, each "player" with its own detuning, vibrato and envelope. Tasks: which pitch and
  which timbre (non-semantic tasks, as FASSL's non-speech benchmarks).

Files are ordinary 16 kHz mono 16-bit WAVs; ``manifest.csv`` beside them holds the labels, the
``source`` (speaker/player id, for non-IID partitioning) and the ``split``: held-out speakers
and players make the test split, so probes measure generalisation to unseen voices.
Generation is deterministic for a seed (espeak-ng itself is deterministic).

[0] Speech Commands, 2018, arXiv:1804.03209
[1] FASSL, 2024, arXiv:2402.02889
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from fedssl.data.manifest import read_rows, write_manifest

log = logging.getLogger(__name__)
SAMPLE_RATE = 16000
FIELDS = ("path", "kind", "word", "pitch", "timbre", "source", "split")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "backward", "forward",
            "follow", "learn", "bed", "bird", "cat", "dog", "happy", "house", "tree", "wow", "visual",
            "marvin", "sheila")
WORDS = DIGITS + KEYWORDS
LANGUAGES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt3", "croak",
            "edward", "john", "linda", "michel", "norbert", "steph", "Andy", "Annie", "Mario", "Lee")
TIMBRES = ("sine", "square", "saw", "pluck", "bell", "organ", "flute", "brass")
PITCHES = tuple(range(48, 84, 3))  # MIDI notes C3..A5 in minor thirds: 12 pitch classes


@dataclass(frozen=True)
class CorpusSpec:
    """How big the corpus is; the defaults generate in well under 2 minutes on 2 cores."""

    speakers: int = 16
    test_speakers: int = 4
    repeats: int = 2  # utterances per word and speaker
    players: int = 12
    test_players: int = 3
    notes: int = 2  # notes per (timbre, pitch) and player
    clip_seconds: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Clip:
    path: str  # relative to the corpus root
    kind: str  # "speech" | "sound"
    word: str
    pitch: str
    timbre: str
    source: str
    split: str


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak(word: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """One word spoken by espeak-ng: float32 samples and their rate (22050 Hz for espeak-ng).

    Raises:
        RuntimeError: if espeak-ng fails or says nothing.
    """
    proc = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
                          capture_output=True, check=False, timeout=30)
    if proc.returncode != 0 or len(proc.stdout) < 100:
        raise RuntimeError(f"espeak-ng -v {voice} {word!r} failed: {proc.stderr.decode(errors='replace')[:200]}")
    audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    return audio, rate


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy), the method :mod:`fedssl.data.audio` uses too."""
    from fedssl.data.audio import resample as _resample

    return _resample(audio, rate, target)


def _place(signal: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """``signal`` at a random offset in ``length`` zeros (cut if longer)."""
    signal = signal[:length]
    out = np.zeros(length, dtype=np.float32)
    start = int(rng.integers(0, length - len(signal) + 1))
    out[start:start + len(signal)] = signal
    return out


def _noise_and_level(x: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float]) -> np.ndarray:
    """Add coloured background noise at a random SNR, then scale to a random peak level (-20..-1 dBFS)."""
    from scipy.signal import lfilter

    colour = rng.uniform(0.0, 0.95)  # 0: white, near 1: rumbling (one-pole low-pass)
    noise = lfilter([1.0], [1.0, -colour], rng.standard_normal(len(x))).astype(np.float32)
    power = float(np.mean(x ** 2)) + 1e-10
    noise *= np.sqrt(power / (np.mean(noise ** 2) + 1e-10) / 10 ** (rng.uniform(*snr_db) / 10))
    y = x + noise
    return (y / (np.abs(y).max() + 1e-9) * 10 ** (rng.uniform(-20, -1) / 20)).astype(np.float32)


def _speakers(spec: CorpusSpec) -> list[tuple[str, str, int, int]]:
    """``(speaker id, espeak voice, base speed wpm, base pitch 0-99)``, the same for a seed."""
    rng = np.random.default_rng(spec.seed)
    pairs = [(lang, var) for var in VARIANTS for lang in LANGUAGES]
    order = rng.permutation(len(pairs))[:spec.speakers]
    return [(f"spk{i:02d}", f"{pairs[j][0]}+{pairs[j][1]}", int(rng.integers(130, 200)), int(rng.integers(20, 80)))
            for i, j in enumerate(order)]


def _speech_jobs(spec: CorpusSpec) -> Iterator[tuple[Clip, str, int, int, int]]:
    speakers = _speakers(spec)
    for s, (sid, voice, speed, pitch) in enumerate(speakers):
        split = "test" if s >= len(speakers) - spec.test_speakers else "train"
        for word in WORDS:
            for r in range(spec.repeats):
                clip = Clip(f"speech/{sid}/{word}_{r}.wav", "speech", word, "", "", sid, split)
                yield clip, voice, speed, pitch, r


def _stable_seed(*parts: object) -> int:
    """A seed from strings and ints that does not depend on Python's hash randomisation."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def _make_speech(job: tuple[Clip, str, int, int, int], spec: CorpusSpec, root: Path) -> Clip:
    clip, voice, speed, pitch, r = job
    rng = np.random.default_rng(_stable_seed(spec.seed, clip.path))
    audio, rate = espeak(clip.word, voice, int(speed * rng.uniform(0.85, 1.2)),
                         int(np.clip(pitch + rng.integers(-12, 13), 0, 99)))
    audio = resample(audio, rate, SAMPLE_RATE)
    length = int(spec.clip_seconds * SAMPLE_RATE)
    x = _noise_and_level(_place(audio, length, rng), rng, snr_db=(5.0, 30.0))
    _write(root / clip.path, x)
    return clip


def synth_note(timbre: str, midi: float, seconds: float, rng: np.random.Generator,
               rate: int = SAMPLE_RATE) -> np.ndarray:
    """One instrument-like note: ``timbre`` x fundamental ``midi`` (float32, peak 1).

    Raises:
        ValueError: for an unknown timbre.
    """
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    vibrato = 1 + rng.uniform(0, 0.006) * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
    phase = 2 * np.pi * f0 * np.cumsum(vibrato) / rate
    attack = rng.uniform(0.005, 0.05)
    env = np.minimum(t / attack, 1.0) * np.exp(-t * rng.uniform(0.5, 2.0))

    def partials(amps: list[float], ratios: list[float] | None = None) -> np.ndarray:
        ratios = ratios or [k + 1 for k in range(len(amps))]
        return sum(a * np.sin(r * phase) for a, r in zip(amps, ratios) if r * f0 < rate / 2)

    if timbre == "sine":
        x = np.sin(phase)
    elif timbre == "square":
        x = partials([1 / k if k % 2 else 0.0 for k in range(1, 16)])
    elif timbre == "saw":
        x = partials([1 / k for k in range(1, 16)])
    elif timbre == "organ":
        x = partials([1.0, 0.5, 0.0, 0.35, 0.0, 0.0, 0.0, 0.25])
        env = np.minimum(t / 0.02, 1.0)
    elif timbre == "flute":
        x = partials([1.0, 0.25, 0.1]) + 0.05 * rng.standard_normal(n)
        env = np.minimum(t / 0.08, 1.0)
    elif timbre == "brass":
        bright = np.minimum(t / 0.1, 1.0)
        x = sum(bright ** k / k * np.sin(k * phase) for k in range(1, 12) if k * f0 < rate / 2)
    elif timbre == "bell":
        x = partials([1.0, 0.6, 0.4, 0.3, 0.2], [1.0, 2.76, 5.4, 8.93, 13.34])
        env = np.minimum(t / 0.002, 1.0) * np.exp(-t * 3.0)
    elif timbre == "pluck":
        x = _karplus_strong(f0, n, rate, rng)
        env = np.ones(n)
    else:
        raise ValueError(f"timbre {timbre!r} is not one of {list(TIMBRES)}")
    x = np.asarray(x, dtype=np.float64) * env
    return (x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def _karplus_strong(f0: float, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A plucked string: a noise burst in a delay line with an averaging low-pass."""
    period = max(int(round(rate / f0)), 2)
    reps = -(-n // period) + 1
    line = rng.uniform(-1, 1, period)
    out = np.empty(reps * period)
    for k in range(reps):  # one period at a time, vectorised within it
        out[k * period:(k + 1) * period] = line
        line = 0.996 * 0.5 * (line + np.roll(line, -1))
    return out[:n]


def _sound_jobs(spec: CorpusSpec) -> Iterator[Clip]:
    for p in range(spec.players):
        pid = f"ply{p:02d}"
        split = "test" if p >= spec.players - spec.test_players else "train"
        for timbre in TIMBRES:
            for midi in PITCHES:
                for r in range(spec.notes):
                    yield Clip(f"sound/{pid}/{timbre}_{midi}_{r}.wav", "sound", "", str(midi), timbre, pid, split)


def _make_sound(clip: Clip, spec: CorpusSpec, root: Path) -> Clip:
    rng = np.random.default_rng(_stable_seed(spec.seed, clip.path))
    player_rng = np.random.default_rng(_stable_seed(spec.seed, clip.source))
    detune = player_rng.uniform(-0.3, 0.3) + rng.uniform(-0.1, 0.1)  # semitones, well inside one class
    seconds = rng.uniform(0.4, 0.9) * spec.clip_seconds
    note = synth_note(clip.timbre, int(clip.pitch) + detune, seconds, rng)
    length = int(spec.clip_seconds * SAMPLE_RATE)
    x = _noise_and_level(_place(note, length, rng), rng, snr_db=(10.0, 40.0))
    _write(root / clip.path, x)
    return clip


def _write(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, SAMPLE_RATE, subtype="PCM_16")


def make_corpus(root: str | Path, spec: CorpusSpec = CorpusSpec(), workers: int = 2,
                speech: bool = True) -> list[Clip]:
    """Generate the corpus under ``root`` and write ``root/manifest.csv``; returns its rows.

    ``speech=False`` (or no ``espeak-ng`` on the machine) leaves the spoken words out, with a warning.
    Raises:
        ValueError: if a test split would take every speaker or player.
    """
    if spec.test_speakers >= spec.speakers or spec.test_players >= spec.players:
        raise ValueError(f"test speakers/players ({spec.test_speakers}/{spec.test_players}) must be fewer "
                         f"than speakers/players ({spec.speakers}/{spec.players})")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    clips: list[Clip] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:  # espeak-ng runs as a subprocess: threads suffice
        if speech and espeak_available():
            clips += list(pool.map(lambda job: _make_speech(job, spec, root), _speech_jobs(spec)))
        elif speech:
            log.warning("espeak-ng is not installed: the corpus has no speech (apt-get install espeak-ng)")
        clips += list(pool.map(lambda clip: _make_sound(clip, spec, root), _sound_jobs(spec)))
    write_manifest(root, clips, FIELDS)
    return clips


def read_manifest(root: str | Path) -> list[Clip]:
    """The rows of ``root/manifest.csv``.

    Raises:
        FileNotFoundError: naming the script that makes the corpus.
    """
    return read_rows(root, Clip, FIELDS, "audio")
