"""Audio encoder checkpoint -> one ``.onnx`` file with the log-mel front end inside (waveform in, embedding out).

``fedssl-export`` hands a checkpoint whose metadata says ``modality: audio`` to :func:`export_audio`:
the fp32 model is checked against PyTorch on real waveforms (a folder of audio files, or
synthetic notes of the corpus generator) before it is moved into place, and the int8 variant
quantises the convolutions only (static, calibrated on the same kind of waveforms): the STFT and
the mel filterbank stay float, so the spectrogram a device computes is the one training saw.
The steps shared with video are in :mod:`export.media`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from export.media import MediaSpec, export_media
from export.parity import MIN_COSINE

INPUT_NAME = "waveforms"
# The STFT, log and per-clip standardisation run in float32 in both runtimes, and the block3 read-out
# standardises each dimension: measured max |diff| ~2e-4 at cosine 1.000000 on synthetic notes.
AUDIO_MAX_ABS_DIFF = 1e-3


def audio_spec(meta: dict[str, Any]) -> MediaSpec:
    """What a device needs to feed an audio model: mono waveforms of the front end's length and rate."""
    frontend = meta["frontend"]
    fields = {"layout": "NT", "sample_rate": frontend["sample_rate"], "samples": frontend["num_samples"],
              "scale": "mono float waveform in [-1, 1]", "frontend": frontend}
    return MediaSpec("audio", INPUT_NAME, "waveforms", (int(frontend["num_samples"]),), fields, meta,
                     embed_batch=64, calibration_batch=32)


def real_waves(folder: str | None, count: int, meta: dict[str, Any], seed: int) -> np.ndarray:
    """``count`` waveforms of the model's length: centre crops of a folder's clips, or synthetic notes + noise.

    Raises:
        ValueError: if the folder holds no usable audio file.
    """
    from fedssl.audio.augment import centre_crops
    from fedssl.data.audio import load_audio_folder
    from fedssl.data.audio_corpus import PITCHES, TIMBRES, synth_note

    frontend = meta["frontend"]
    samples, rate = int(frontend["num_samples"]), int(frontend["sample_rate"])
    rng = np.random.default_rng(seed)
    if folder:
        clips = load_audio_folder(folder, rate, samples / rate, 0.0).clips
        return centre_crops(clips[np.sort(rng.choice(len(clips), min(count, len(clips)), replace=False))], samples)
    notes = [synth_note(TIMBRES[i % len(TIMBRES)], PITCHES[i % len(PITCHES)], samples / rate, rng, rate)
             for i in range(count)]
    waves = np.stack(notes) * rng.uniform(0.05, 0.9, (count, 1)) + rng.normal(0, 0.01, (count, samples))
    return waves.astype(np.float32)


def export_audio(encoder: nn.Module, meta: dict[str, Any], checkpoint: Path, output: Path, *, audio_dir: str | None,
                 int8: bool, parity_count: int = 64, calibration_count: int = 128, opset: int | None = None,
                 max_abs_diff: float = AUDIO_MAX_ABS_DIFF, min_cosine: float = MIN_COSINE) -> list[dict[str, Any]]:
    """Export, check, quantise and write sidecars; one summary row per file written.

    Raises:
        ParityError: if the fp32 model does not match PyTorch (nothing is written then).
    """
    return export_media(encoder, audio_spec(meta), lambda count, seed: real_waves(audio_dir, count, meta, seed),
                        checkpoint, output, int8=int8, parity_count=parity_count,
                        calibration_count=calibration_count, opset=opset, max_abs_diff=max_abs_diff,
                        min_cosine=min_cosine)
