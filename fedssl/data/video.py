"""A device's own video files (a camera folder) decoded into fixed-length grey clips.

Files are decoded with PyAV (FFmpeg: MP4/H.264, AVI, MKV, WebM, MOV ...); each frame is
converted to grey and scaled to ``size x size`` by FFmpeg's swscale (a non-square frame is
squashed, not cropped, so nothing at the edge is lost). A video is cut into consecutive clips of
``frames`` frames (up to ``max_clips_per_file``; a partial last clip is dropped). Corrupt, empty,
unreadable and too-short files (fewer than ``frames`` frames) are skipped and counted in a
:class:`fedssl.data.skips.SkipReport`, never fatal: one bad recording must not take a device out
of the federation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from fedssl.data.skips import SkipReason, SkipReport, UnusableImage

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg"}


class UnusableVideo(UnusableImage):
    """One video file cannot become a clip; ``reason`` is a :class:`SkipReason`."""


@dataclass
class FolderVideo:
    """Clips ``(N, frames, size, size)`` uint8, the file each came from, and what was skipped."""

    clips: np.ndarray
    paths: list[str]
    skipped: SkipReport = field(default_factory=SkipReport)


def read_video(path: str | Path, size: int, max_frames: int = 0) -> np.ndarray:
    """The first ``max_frames`` frames (all if 0) of a file's first video stream, grey, ``size x size``.

    Shape: -> (T, size, size) uint8
    Raises:
        UnusableVideo: missing/unreadable, empty (0 bytes), corrupt (no decodable video stream).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise UnusableVideo(SkipReason.EMPTY, "0 bytes")
    except OSError as exc:
        raise UnusableVideo(SkipReason.UNREADABLE, str(exc)[:120]) from None
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UnusableVideo(SkipReason.CORRUPT, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type, stream.codec_context.thread_count = "NONE", 1  # small clips: threads cost more
            for frame in container.decode(stream):
                scaled = {} if frame.width == frame.height == size else {"width": size, "height": size}
                frames.append(frame.to_ndarray(format="gray", **scaled))
                if max_frames and len(frames) >= max_frames:
                    break
    except UnusableVideo:
        raise
    except PermissionError as exc:
        raise UnusableVideo(SkipReason.UNREADABLE, str(exc)[:120]) from None
    except (av.FFmpegError, OSError, ValueError) as exc:  # not a container FFmpeg knows, or broken data
        if not frames:
            raise UnusableVideo(SkipReason.CORRUPT, str(exc)[:120]) from None
        log.debug("%s: decoding stopped after %d frames (%s)", path, len(frames), exc)  # a truncated tail
    if not frames:
        raise UnusableVideo(SkipReason.CORRUPT, "no decodable frame")
    return np.stack(frames)


def to_clips(video: np.ndarray, frames: int, max_clips: int = 4) -> np.ndarray:
    """Consecutive clips ``(k, frames, H, W)`` of a video ``(T, H, W)``; a partial last clip is dropped.

    Raises:
        UnusableVideo: (too-short) if the video has fewer than ``frames`` frames.
    """
    if len(video) < frames:
        raise UnusableVideo(SkipReason.TOO_SHORT, f"{len(video)} frames < {frames}")
    count = min(max_clips, len(video) // frames)
    return video[:count * frames].reshape(count, frames, *video.shape[1:])


def list_videos(root: str | Path) -> list[Path]:
    """Video files under ``root`` (recursively, by suffix), sorted for reproducibility.

    Raises:
        FileNotFoundError: if ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist or is not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def load_clips(paths: list[Path], size: int, frames: int, max_clips_per_file: int = 4) -> FolderVideo:
    """Decode ``paths`` into clips; bad files are skipped and counted by reason."""
    clips, kept, skipped = [], [], SkipReport()
    for path in paths:
        try:
            pieces = to_clips(read_video(path, size, frames * max_clips_per_file), frames, max_clips_per_file)
        except UnusableVideo as exc:
            skipped.add_error(str(path), exc)
            continue
        clips.append(pieces)
        kept += [str(path)] * len(pieces)
    skipped.log(log, "video clips")
    stacked = np.concatenate(clips) if clips else np.zeros((0, frames, size, size), dtype=np.uint8)
    return FolderVideo(stacked, kept, skipped)


def load_video_folder(root: str | Path, size: int, frames: int, limit: int = 0,
                      max_clips_per_file: int = 4) -> FolderVideo:
    """Every usable video under ``root`` as clips (a device's ``data-dir``).

    Raises:
        FileNotFoundError: if the folder is missing.
        ValueError: if it holds no usable video.
    """
    paths = list_videos(root)
    if limit:
        paths = paths[:limit]
    video = load_clips(paths, size, frames, max_clips_per_file)
    if not len(video.clips):
        raise ValueError(f"no usable video file in {root} ({len(video.skipped)} skipped: {video.skipped.counts()})")
    return video
