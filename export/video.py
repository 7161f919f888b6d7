"""Video encoder checkpoint -> one ``.onnx`` file (grey clips in, embedding out), parity-checked, and int8.

``fedssl-export`` hands a checkpoint whose metadata says ``modality: video`` to :func:`export_video`:
the fp32 model is checked against PyTorch on real clips (a folder of video files, or clips drawn
like the generated corpus's) before it is moved into place, and the int8 variant quantises the 3D
convolutions (static QDQ, per channel, calibrated on the same kind of clips). The grey
standardisation and pooling stay float. The steps shared with audio are in :mod:`export.media`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from export.media import MediaSpec, export_media
from export.parity import MAX_ABS_DIFF, MIN_COSINE

INPUT_NAME = "clips"


def video_spec(meta: dict[str, Any]) -> MediaSpec:
    """What a device needs to feed a video model: ``frames`` grey frames of ``size x size`` in [0, 1]."""
    video = meta["video"]
    frames, size = int(video["frames"]), int(video["size"])
    fields = {"layout": "NTHW", "frames": video["frames"], "size": video["size"], "video": video,
              "scale": "grey pixel/255"}
    return MediaSpec("video", INPUT_NAME, "clips", (frames, size, size), fields, meta, embed_batch=32,
                     calibration_batch=16)


def real_clips(folder: str | None, count: int, meta: dict[str, Any], seed: int) -> np.ndarray:
    """``count`` float clips of the model's input: centre windows of a folder's videos, or clips drawn like the
    generated corpus's (moving Fashion-MNIST test garments).

    Raises:
        ValueError: if the folder holds no usable video.
    """
    from fedssl.data.video import load_video_folder
    from fedssl.data.video_corpus import MOTIONS, CorpusSpec, draw_garments, finish, render, trajectories

    frames, size = int(meta["video"]["frames"]), int(meta["video"]["size"])
    rng = np.random.default_rng(seed)
    if folder:
        clips = load_video_folder(folder, size, frames).clips
        clips = clips[np.sort(rng.choice(len(clips), min(count, len(clips)), replace=False))]
    else:
        spec = CorpusSpec(frames=frames, size=size, seed=seed)
        objects, _ = draw_garments("test", count, rng)
        motions = np.arange(count) % len(MOTIONS)
        clips = finish(render(objects, *trajectories(motions, spec, rng), spec), rng)
    return clips.astype(np.float32) / 255.0


def export_video(encoder: nn.Module, meta: dict[str, Any], checkpoint: Path, output: Path, *, video_dir: str | None,
                 int8: bool, parity_count: int = 64, calibration_count: int = 128, opset: int | None = None,
                 max_abs_diff: float = MAX_ABS_DIFF, min_cosine: float = MIN_COSINE) -> list[dict[str, Any]]:
    """Export, check, quantise and write sidecars; one summary row per file written.

    Raises:
        ParityError: if the fp32 model does not match PyTorch (nothing is written then).
    """
    return export_media(encoder, video_spec(meta), lambda count, seed: real_clips(video_dir, count, meta, seed),
                        checkpoint, output, int8=int8, parity_count=parity_count,
                        calibration_count=calibration_count, opset=opset, max_abs_diff=max_abs_diff,
                        min_cosine=min_cosine)
