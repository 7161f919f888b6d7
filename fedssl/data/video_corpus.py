"""A labelled video clip corpus made locally, offline, from the installed Fashion-MNIST.

Nothing can be downloaded at run time (``torchvision.datasets.MovingMNIST`` downloads), so the video
tasks are generated: one Fashion-MNIST garment per clip, moving on a dark canvas in one of eight
ways. The *motion* label can only be read from several frames (one frame of "moving left" looks
like one frame of "moving right"); the garment's class is a second, appearance label.

- ``right``/``left``/``down``/``up``: translation at 0.6-1.0 px per frame;
- ``rotate-cw``/``rotate-ccw``: rotation about a fixed centre at 4-7 degrees per frame (as seen on screen);
- ``zoom-in``/``zoom-out``: scale growing or shrinking by 3-5 % per frame.

Every clip has its own start position, size, tilt, brightness and sensor noise. Motions are
stationary in time, so any temporal crop of a clip keeps its label. Files are ordinary H.264 MP4s
(PyAV, which bundles FFmpeg) written as a camera would; ``manifest.csv`` beside them holds
``path, motion, object, split``. Train clips use Fashion-MNIST's train images, test clips its test
images: probes retrieve unseen garments. Generation is deterministic for a seed.

[0] Unsupervised learning of video representations using LSTMs (Moving MNIST), 2015, arXiv:1502.04681
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from fedssl.data.manifest import read_rows, write_manifest

FIELDS = ("path", "motion", "object", "split")
MOTIONS = ("right", "left", "down", "up", "rotate-cw", "rotate-ccw", "zoom-in", "zoom-out")
OBJECTS = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
_DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}  # (x, y), y pointing down


@dataclass(frozen=True)
class CorpusSpec:
    """How big the corpus is; the defaults (440 clips) generate in a few seconds on 2 cores."""

    train_per_motion: int = 40
    test_per_motion: int = 15
    frames: int = 16
    size: int = 32
    fps: int = 8
    object_px: float = 15.0  # the garment's 28 px drawn this wide at scale 1
    seed: int = 0


@dataclass(frozen=True)
class VideoClip:
    path: str  # relative to the corpus root
    motion: str
    object: str
    split: str  # "train" | "test"


def trajectories(motions: np.ndarray, spec: CorpusSpec, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per clip and frame: centre in pixels from the canvas centre ``(N, T, 2)``, angle in radians ``(N, T)``
    and scale ``(N, T)``, for motion indices into :data:`MOTIONS`."""
    n, t = len(motions), spec.frames
    steps = np.arange(t) - (t - 1) / 2  # centred, so the object is in the middle of its path mid-clip
    centre = np.repeat(rng.uniform(-2.5, 2.5, (n, 1, 2)), t, axis=1)
    angle = np.repeat(rng.uniform(-0.2, 0.2, (n, 1)), t, axis=1)
    scale = np.repeat(rng.uniform(0.85, 1.1, (n, 1)), t, axis=1)
    for i, m in enumerate(motions):
        name = MOTIONS[m]
        if name in _DIRECTIONS:
            speed = rng.uniform(0.6, 1.0)
            centre[i] += np.outer(steps, _DIRECTIONS[name]) * speed
        elif name.startswith("rotate"):
            omega = np.deg2rad(rng.uniform(4.0, 7.0)) * (1 if name == "rotate-cw" else -1)
            angle[i] += omega * steps
        else:
            rate = rng.uniform(1.03, 1.05) ** (1 if name == "zoom-in" else -1)
            scale[i] *= rate ** steps
    return centre, angle, scale


def render(objects: np.ndarray, centre: np.ndarray, angle: np.ndarray, scale: np.ndarray,
           spec: CorpusSpec) -> np.ndarray:
    """Draw each object along its trajectory: one batched ``grid_sample`` for all frames.

    Shape: objects (N, 28, 28) uint8, centre (N, T, 2), angle/scale (N, T) -> clips (N, T, size, size) uint8
    """
    n, t = angle.shape
    size = spec.size
    cos, sin = np.cos(angle), np.sin(angle)
    k = size / (spec.object_px * scale)  # canvas units -> object units
    c = centre * 2.0 / size  # pixels -> normalised canvas coordinates
    # object coordinates q = k R(-angle) (p - c): rotating the object by +angle (clockwise on screen, y down)
    theta = np.stack([np.stack([k * cos, k * sin, -k * (cos * c[..., 0] + sin * c[..., 1])], -1),
                      np.stack([-k * sin, k * cos, -k * (-sin * c[..., 0] + cos * c[..., 1])], -1)], -2)
    theta = torch.from_numpy(theta.reshape(n * t, 2, 3)).float()
    grid = F.affine_grid(theta, [n * t, 1, size, size], align_corners=False)
    src = torch.from_numpy(np.repeat(objects, t, axis=0)).float()[:, None] / 255.0  # (N*T, 1, 28, 28)
    frames = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return frames.view(n, t, size, size).numpy()


def finish(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, a faint background level and sensor noise per clip; float in [0, 1] -> uint8."""
    n = len(frames)
    gain = rng.uniform(0.65, 1.0, (n, 1, 1, 1))
    floor = rng.uniform(0.0, 0.12, (n, 1, 1, 1))
    x = floor + (1 - floor) * frames * gain + rng.normal(0, 0.015, frames.shape)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8, crf: int = 12) -> None:
    """Write grey frames ``(T, H, W)`` uint8 as an H.264 MP4 (yuv420p, what players and phones expect)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="gray")))
        container.mux(stream.encode())


def draw_garments(split: str, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct Fashion-MNIST images ``(count, 28, 28)`` uint8 of ``split`` and their classes."""
    from fedssl.data.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist(split)
    idx = rng.choice(len(images), count, replace=False)
    return images[idx, 0], labels[idx]


def make_corpus(root: str | Path, spec: CorpusSpec = CorpusSpec()) -> list[VideoClip]:
    """Generate the corpus under ``root`` and write ``root/manifest.csv``; returns its rows.

    Raises:
        ValueError: for a spec with no clips, fewer than 2 frames or a canvas under 16 px.
    """
    if spec.train_per_motion < 1 or spec.test_per_motion < 1 or spec.frames < 2 or spec.size < 16:
        raise ValueError(f"video corpus spec {spec} needs >= 1 clip per motion and split, >= 2 frames, size >= 16")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    rows: list[VideoClip] = []
    for split, per_motion in (("train", spec.train_per_motion), ("test", spec.test_per_motion)):
        motions = np.repeat(np.arange(len(MOTIONS)), per_motion)
        objects, labels = draw_garments(split, len(motions), rng)
        clips = finish(render(objects, *trajectories(motions, spec, rng), spec), rng)
        for i, (m, label, clip) in enumerate(zip(motions, labels, clips)):
            row = VideoClip(f"{split}/{MOTIONS[m]}/{i:05d}.mp4", MOTIONS[m], OBJECTS[label], split)
            write_video(root / row.path, clip, spec.fps)
            rows.append(row)
    write_manifest(root, rows, FIELDS)
    return rows


def read_manifest(root: str | Path) -> list[VideoClip]:
    """The rows of ``root/manifest.csv``.

    Raises:
        FileNotFoundError: naming the script that makes the corpus.
    """
    return read_rows(root, VideoClip, FIELDS, "video")
