"""Video files for ``fedssl-retrieve``: an exported video encoder (grey clips in) and a source of video files.

The model's metadata (written by :mod:`export.video`) says ``modality: video`` and gives the number of
frames and the frame size it takes; each file is decoded with PyAV (the device training's own reader,
:mod:`fedssl.data.video`) and its centre window of that many frames embedded. A file that cannot be
decoded, or is shorter than the window, is skipped with its reason, as for images and audio. The
parts shared with audio are in :mod:`export.retrieve.media`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.retrieve.media import MediaFiles, MediaModelMeta, OnnxMediaEncoder
from fedssl.data.skips import SkipReason
from fedssl.data.video import UnusableVideo, list_videos, read_video

MAX_WINDOWS = 8  # a long file is decoded up to this many windows' worth of frames, then its centre window taken


@dataclass(frozen=True, kw_only=True)
class VideoModelMeta(MediaModelMeta):
    """A video model's meta and its input: ``frames`` grey frames of ``size x size``."""

    frames: int
    size: int


class OnnxVideoEncoder(OnnxMediaEncoder):
    """An exported video encoder in onnxruntime: float clips ``(N, frames, size, size)`` in [0, 1] -> ``(N, D)``."""

    modality, kind, noun = "video", "a video encoder", "clips"

    def read_meta(self, props: dict[str, Any]) -> VideoModelMeta:
        return VideoModelMeta(frames=int(props["frames"]), size=int(props["size"]),
                              **VideoModelMeta.common(props, "clips"))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.meta.frames, self.meta.size, self.meta.size)


class VideoFiles(MediaFiles):
    """Video files to decode: folders (searched recursively; sub-folder names are labels) and single files."""

    unusable = (UnusableVideo,)

    def __init__(self, inputs: Sequence[str | Path], frames: int, size: int) -> None:
        self.frames, self.size = frames, size
        super().__init__(inputs, list_videos)

    def load(self, path: Path) -> np.ndarray:
        """The centre ``frames`` frames of a file, float in [0, 1]. Raises :class:`UnusableVideo`."""
        video = read_video(path, self.size, self.frames * MAX_WINDOWS)
        if len(video) < self.frames:
            raise UnusableVideo(SkipReason.TOO_SHORT, f"{len(video)} frames < {self.frames}")
        start = (len(video) - self.frames) // 2
        return video[start:start + self.frames].astype(np.float32) / 255.0

    def skip(self, path: Path, exc: Exception) -> None:
        self.skipped.add_error(str(path), exc)
