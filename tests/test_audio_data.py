"""Audio in: the generated corpus, and reading real (good and bad) files from a device's folder."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import soundfile as sf

from fedssl.data.audio import BadAudioError, load_audio, load_audio_folder, resample, to_clips
from fedssl.data.audio_corpus import (
    PITCHES,
    SAMPLE_RATE,
    TIMBRES,
    WORDS,
    CorpusSpec,
    espeak_available,
    make_corpus,
    read_manifest,
    synth_note,
)

TINY = CorpusSpec(speakers=3, test_speakers=1, repeats=1, players=2, test_players=1, notes=1)


def _digest(root) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.wav"))}


@pytest.mark.skipif(not espeak_available(), reason="needs the Debian package espeak-ng")
def test_corpus_is_labelled_deterministic_and_split_by_speaker(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    clips = make_corpus(a, TINY)
    make_corpus(b, TINY)
    assert _digest(a) == _digest(b)  # the same seed, the same bytes
    speech = [c for c in clips if c.kind == "speech"]
    sound = [c for c in clips if c.kind == "sound"]
    assert len(speech) == 3 * len(WORDS) and len(sound) == 2 * len(TIMBRES) * len(PITCHES)
    assert {c.split for c in speech if c.source == "spk02"} == {"test"}  # the last speaker is held out
    assert {c.split for c in speech if c.source != "spk02"} == {"train"}
    assert read_manifest(a) == clips
    info = sf.info(str(a / speech[0].path))
    assert (info.samplerate, info.channels, info.frames) == (SAMPLE_RATE, 1, SAMPLE_RATE)
    voiced = [np.abs(sf.read(str(a / c.path))[0]).max() for c in speech[:5]]
    assert min(voiced) > 0.05  # espeak-ng said something, at a level above the noise floor


def test_a_different_seed_gives_different_sounds(tmp_path):
    make_corpus(tmp_path / "a", TINY, speech=False)
    make_corpus(tmp_path / "b", CorpusSpec(**{**TINY.__dict__, "seed": 1}), speech=False)
    assert _digest(tmp_path / "a").keys() == _digest(tmp_path / "b").keys()
    assert _digest(tmp_path / "a") != _digest(tmp_path / "b")


@pytest.mark.parametrize("timbre", TIMBRES)
def test_synthetic_note_has_its_pitch(timbre):
    midi = 57  # A3, 220 Hz
    x = synth_note(timbre, midi, 0.5, np.random.default_rng(0))
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    peaks = freqs[np.argsort(spectrum)[-8:]]
    assert np.min(np.abs(peaks - 220.0)) < 6.0  # the fundamental is among the strongest bins


def test_unknown_timbre_and_bad_split_sizes_raise(tmp_path):
    with pytest.raises(ValueError, match="kazoo"):
        synth_note("kazoo", 60, 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="fewer"):
        make_corpus(tmp_path, CorpusSpec(players=2, test_players=2))
    with pytest.raises(FileNotFoundError, match="make_audio_corpus"):
        read_manifest(tmp_path / "nothing")


def test_resample_keeps_a_tone_and_the_duration():
    t = np.arange(44100) / 44100
    y = resample(np.sin(2 * np.pi * 440 * t), 44100, 16000)
    assert len(y) == 16000
    ref = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(y[200:-200] - ref[200:-200]).max() < 1e-3  # away from the filter's edge effects


def test_to_clips_pads_short_and_splits_long_signals():
    assert to_clips(np.ones(300, np.float32), 1000).shape == (1, 1000)
    assert to_clips(np.ones(2600, np.float32), 1000).shape == (3, 1000)  # 600 left over >= half a clip
    assert to_clips(np.ones(2400, np.float32), 1000).shape == (2, 1000)  # 400 left over is dropped
    assert to_clips(np.ones(50_000, np.float32), 1000, max_clips=4).shape == (4, 1000)


@pytest.fixture
def device_folder(tmp_path):
    """A microphone folder with good files in two formats and every kind of bad one."""
    root = tmp_path / "mic"
    (root / "day1").mkdir(parents=True)
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 330 * t), np.sin(2 * np.pi * 330 * t) * 0.5], 1)
    sf.write(root / "day1" / "stereo_44k.flac", stereo, 44100)  # FLAC, stereo, 1 s
    sf.write(root / "mono_8k.wav", np.sin(2 * np.pi * 200 * np.arange(24000) / 8000), 8000)  # 3 s
    (root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" + bytes(50))
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "no_frames.wav", np.zeros(0), 16000)  # a valid header and no samples
    sf.write(root / "blip.wav", np.ones(80) * 0.1, 16000)  # 5 ms
    (root / "notes.flac").write_text("this is not audio")  # wrong format behind an audio suffix
    sf.write(root / "nan.wav", np.full(16000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    (root / "readme.txt").write_text("ignored: not an audio suffix")
    return root


def test_bad_files_are_skipped_and_counted_by_reason(device_folder):
    audio = load_audio_folder(device_folder, 16000, clip_seconds=1.0, min_seconds=0.1)
    assert audio.clips.shape == (1 + 3, 16000) and audio.clips.dtype == np.float32
    assert audio.paths.count(str(device_folder / "mono_8k.wav")) == 3
    assert {k: sorted(p.rsplit("/", 1)[1] for p in v) for k, v in audio.skipped.items()} == {
        "unreadable": ["corrupt.wav", "empty.wav", "notes.flac"],
        "empty": ["no_frames.wav"],
        "too-short": ["blip.wav"],
        "not-finite": ["nan.wav"],
    }
    assert audio.num_skipped == 6
    flac = audio.clips[audio.paths.index(str(device_folder / "day1" / "stereo_44k.flac"))]
    ref = 0.75 * np.sin(2 * np.pi * 330 * np.arange(16000) / 16000)  # the mix-down of both channels
    assert np.abs(flac[200:-200] - ref[200:-200]).max() < 1e-3


def test_a_folder_without_usable_audio_is_an_error_not_a_crash(tmp_path, device_folder):
    with pytest.raises(FileNotFoundError):
        load_audio_folder(tmp_path / "missing", 16000, 1.0, 0.1)
    for good in ("mono_8k.wav", "day1/stereo_44k.flac"):
        (device_folder / good).unlink()
    with pytest.raises(ValueError, match="no usable audio file.*6 skipped"):
        load_audio_folder(device_folder, 16000, 1.0, 0.1)
    with pytest.raises(BadAudioError) as info:
        load_audio(device_folder / "blip.wav", 16000, min_seconds=0.1)
    assert info.value.reason == "too-short"


def test_launcher_audio_config_points_at_an_absolute_corpus(tmp_path, monkeypatch):
    from launcher.cli import audio_run_config

    make_corpus(tmp_path / "c", TINY, speech=False)
    monkeypatch.chdir(tmp_path)
    config = audio_run_config({"audio.corpus-dir": "c", "num-rounds": 1}, smoke=True)
    assert config["audio.corpus-dir"] == str(tmp_path / "c") and config["data.modality"] == "audio"
    assert config["num-rounds"] == 1 and config["train.max-steps"] == 2  # overrides win over the tiny preset
