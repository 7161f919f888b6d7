"""Video files for ``fedssl-retrieve``: an exported video encoder (grey clips in) and a source of video files.

The model's metadata (written by :mod:`export.video`) says ``modality: video`` and gives the number of
frames and the frame size it takes; each file is decoded with PyAV (the device training's own reader,
:mod:`fedssl.data.video`) and its centre window of that many frames embedded. A file that cannot be
decoded, or is shorter than the window, is skipped with its reason, as for images and audio.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.metadata import sha256_file
from export.retrieve.audio import model_props
from export.retrieve.encoder import ModelError, _provider_options, choose_providers
from export.retrieve.images import ImageBatch
from fedssl.data.skips import SkipReason, SkipReport
from fedssl.data.video import UnusableVideo, list_videos, read_video

log = logging.getLogger(__name__)
MAX_WINDOWS = 8  # a long file is decoded up to this many windows' worth of frames, then its centre window taken


@dataclass(frozen=True)
class VideoModelMeta:
    """What an index records about the model (the fields :class:`RetrievalIndex` reads) and what input it takes."""

    embedding_dim: int
    frames: int
    size: int
    precision: str = "fp32"
    run_id: str = ""
    round: int = 0
    input_name: str = "clips"
    output_name: str = "embeddings"


class OnnxVideoEncoder:
    """An exported video encoder in onnxruntime: float clips ``(N, frames, size, size)`` in [0, 1] -> ``(N, D)``."""

    modality = "video"

    def __init__(self, path: str | Path, provider: str = "auto", threads: int = 0) -> None:
        self.path = Path(path)
        props = model_props(self.path)
        if props.get("modality") != "video":
            raise ModelError(f"model {self.path} is not a video encoder exported by fedssl-export")
        self.meta = VideoModelMeta(int(props["embedding_dim"]), int(props["frames"]), int(props["size"]),
                                   str(props.get("precision", "fp32")), str(props.get("run_id", "")),
                                   int(props.get("round", 0)), str(props.get("input_name", "clips")),
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

    def embed(self, clips: np.ndarray) -> np.ndarray:
        """Shape: (N, frames, size, size) float32 in [0, 1] -> (N, embedding_dim) float32.

        Raises:
            ValueError: if the clips do not have the model's shape.
        """
        m = self.meta
        if clips.ndim != 4 or clips.shape[1:] != (m.frames, m.size, m.size):
            raise ValueError(f"clips of shape {clips.shape} do not fit the model's input "
                             f"(N, {m.frames}, {m.size}, {m.size})")
        return self.session.run([m.output_name], {m.input_name: clips.astype(np.float32)})[0].astype(np.float32)


class VideoFiles:
    """Video files to decode: folders (searched recursively; sub-folder names are labels) and single files."""

    def __init__(self, inputs: Sequence[str | Path], frames: int, size: int) -> None:
        self.frames, self.size = frames, size
        self.skipped = SkipReport()
        self.entries: list[tuple[Path, str]] = []
        for item in map(Path, inputs):
            if item.is_dir():
                self.entries += [(p, "" if p.parent == item else p.parent.relative_to(item).as_posix())
                                 for p in list_videos(item)]
            elif item.is_file():
                self.entries.append((item, ""))
            else:
                self.skipped.add(str(item), SkipReason.MISSING)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, path: Path) -> np.ndarray:
        """The centre ``frames`` frames of a file, float in [0, 1]. Raises :class:`UnusableVideo`."""
        video = read_video(path, self.size, self.frames * MAX_WINDOWS)
        if len(video) < self.frames:
            raise UnusableVideo(SkipReason.TOO_SHORT, f"{len(video)} frames < {self.frames}")
        start = (len(video) - self.frames) // 2
        return video[start:start + self.frames].astype(np.float32) / 255.0

    def batches(self, batch_size: int) -> Iterator[ImageBatch]:
        """Batches of clips ``(n, frames, size, size)`` (in an :class:`ImageBatch`, the index's batch type)."""
        for start in range(0, len(self.entries), batch_size):
            clips, paths, labels = [], [], []
            for path, label in self.entries[start:start + batch_size]:
                try:
                    clips.append(self.load(path))
                except UnusableVideo as exc:
                    self.skipped.add_error(str(path), exc)
                    continue
                paths.append(str(path))
                labels.append(label)
            if clips:
                yield ImageBatch(np.stack(clips), paths, labels)
