"""An exported encoder in an onnxruntime session: uint8 images in, embeddings out.

The execution provider is the best one this onnxruntime build offers:
TensorRT, then CUDA (Jetson, GPU nodes), then CPU; onnxruntime falls back
down that list for any operator a provider cannot run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.metadata import EncoderMetadata, sha256_file
from export.retrieve.images import normalize

log = logging.getLogger(__name__)
PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDER_NAMES = {"tensorrt": PREFERENCE[0], "cuda": PREFERENCE[1], "cpu": PREFERENCE[2]}


class ModelError(ValueError):
    """The model file is missing, unreadable, or not a fedssl-exported encoder."""


def choose_providers(requested: str = "auto", available: list[str] | None = None) -> list[str]:
    """Providers for a session, best first; ``requested`` is ``auto`` or one of ``tensorrt``, ``cuda``, ``cpu``.

    Raises:
        ValueError: for an unknown name, or one this onnxruntime build does not offer.
    """
    available = ort.get_available_providers() if available is None else available
    if requested == "auto":
        return [p for p in PREFERENCE if p in available] or ["CPUExecutionProvider"]
    if requested not in PROVIDER_NAMES:
        raise ValueError(f"provider = {requested!r} is not one of {['auto', *PROVIDER_NAMES]}")
    name = PROVIDER_NAMES[requested]
    if name not in available:
        raise ValueError(f"provider {requested!r} ({name}) is not offered by this onnxruntime; available: {available}")
    return [p for p in PREFERENCE[PREFERENCE.index(name):] if p in available] or [name]


def _provider_options(name: str) -> dict[str, str]:
    if name == "TensorrtExecutionProvider":  # building an engine takes minutes on a Jetson: cache it
        cache = Path(os.environ.get("FEDSSL_TRT_CACHE", Path.home() / ".cache" / "fedssl" / "tensorrt"))
        cache.mkdir(parents=True, exist_ok=True)
        return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache)}
    return {}


def check_model_path(path: str | Path) -> Path:
    """``path`` as a Path if it is a regular file; never opens anything else (a FIFO would block).

    Raises:
        ModelError: a folder, a special file, or nothing at all.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"model {path} is a folder, not a model file (give its encoder.onnx)")
    if path.exists() and not path.is_file():
        raise ModelError(f"model {path} is not a regular file (never opened)")
    if not path.is_file():
        raise ModelError(f"model {path} does not exist (export one with fedssl-export)")
    return path


class OnnxEncoder:
    """Load ``path``, check it is a fedssl encoder, and embed uint8 image batches.

    Raises:
        ModelError: if the file is missing, not ONNX, or lacks fedssl metadata / the expected input.
    """

    def __init__(self, path: str | Path, provider: str = "auto", threads: int = 0) -> None:
        self.path = check_model_path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if threads:
            options.intra_op_num_threads = threads
        providers = choose_providers(provider)
        try:
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=[(p, _provider_options(p)) for p in providers])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf classes
            raise ModelError(f"model {self.path} is not a readable ONNX model: {exc}") from exc
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.meta = EncoderMetadata.from_props(props, source=f"model {self.path}")
        except ValueError as exc:
            raise ModelError(str(exc)) from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        if self.meta.input_name not in inputs:
            raise ModelError(f"model {self.path} has no input {self.meta.input_name!r} (inputs: {list(inputs)})")
        outputs = [o.name for o in self.session.get_outputs()]
        if self.meta.output_name not in outputs:
            raise ModelError(f"model {self.path} has no output {self.meta.output_name!r} (outputs: {outputs})")
        self.sha256 = sha256_file(self.path)
        self.providers = self.session.get_providers()
        log.info("loaded %s (%s, sha256 %s) on %s", self.path, self.meta.precision, self.sha256[:12], self.providers)

    @property
    def size(self) -> int:
        return self.meta.height

    @property
    def channels(self) -> int:
        return self.meta.channels

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embeddings of uint8 images, preprocessed as in training.

        Shape: (N, C, H, W) uint8 -> (N, embedding_dim) float32

        Raises:
            ValueError: if the images do not have the model's channels and size.
            ModelError: if the model fails on them or its output is not ``(N, embedding_dim)``
                (the metadata lies about the graph).
        """
        expected = (self.meta.channels, self.meta.height, self.meta.width)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"images of shape {images.shape} do not fit the model's input (N, *{expected})")
        x = normalize(images, self.meta.mean, self.meta.std)
        try:
            out = self.session.run([self.meta.output_name], {self.meta.input_name: x})[0]
        except Exception as exc:  # onnxruntime's own exception classes: wrong shapes, types, missing output
            raise ModelError(f"model {self.path} failed on a batch of shape {x.shape}: {exc}") from exc
        out = np.asarray(out)
        if out.shape != (len(images), self.meta.embedding_dim) or out.dtype.kind != "f":
            raise ModelError(f"model {self.path} returned {out.dtype} {out.shape} for {len(images)} image(s), "
                             f"not ({len(images)}, {self.meta.embedding_dim}) floats as its metadata says")
        return out.astype(np.float32)
