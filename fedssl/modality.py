"""One entry per input modality (``data.modality``): what differs between images, audio and video, and nothing else.

The strategy, filtering, checkpoints, metrics, deployment and export code is shared; a modality
supplies the data pipeline (a device's data, two-view batches), the encoder's input (a raw image,
a waveform through a front end inside the encoder, or a clip of grey frames into a 3D CNN), the
probe tasks with their raw-input baseline, and what a checkpoint must record to rebuild the encoder.

    MODALITIES.get(cfg.data.modality).build_backbone(cfg)  # the encoder a run trains and exports
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor, nn

from fedssl.config import RunConfig, validate_audio, validate_video
from fedssl.registry import Registry

ViewSource = Callable[[np.ndarray, int, int], Iterator[tuple[Tensor, Tensor]]]  # (data, batch, seed) -> views


@dataclass(frozen=True)
class Modality:
    """What one modality plugs into the shared federation.

    Data are arrays with the sample axis first: images ``(N, C, H, W)`` uint8, audio clips
    ``(N, samples)`` float32, video clips ``(N, frames, size, size)`` uint8. ``views`` is None for the
    image pipeline of :mod:`fedssl.train`.
    """

    name: str
    tasks: Registry[Any]  # the probe tasks ``eval.tasks`` may name
    raw_baseline: str  # the name of the raw-input baseline in metrics and logs
    input_hw: Callable[[RunConfig], tuple[int, int]]  # the 2-D map the CNN backbone sees
    build_backbone: Callable[[RunConfig], nn.Module]  # raw input -> embedding; what travels and exports
    node_data: Callable[[RunConfig, Mapping[str, object]], np.ndarray]
    views: Callable[[RunConfig], ViewSource | None]
    embed: Callable[[nn.Module, np.ndarray, RunConfig], Tensor]  # un-augmented embeddings (collapse check)
    load_tasks: Callable[[RunConfig], list]
    probe: Callable[[nn.Module, list, RunConfig, bool], Any]  # -> fedssl.probe.ProbeScores
    probe_raw: Callable[[list, RunConfig, bool], Any]
    calibrate: Callable[[nn.Module, np.ndarray, RunConfig], nn.Module]
    checkpoint_meta: Callable[[RunConfig], dict[str, Any]]  # extra encoder metadata (front end)
    validate: Callable[[RunConfig], None]


MODALITIES: Registry[Modality] = Registry("data.modality")


def build_backbone(cfg: RunConfig) -> nn.Module:
    """The encoder of ``cfg.data.modality`` (a fresh, randomly initialised one)."""
    return MODALITIES.get(cfg.data.modality).build_backbone(cfg)


# --- image ------------------------------------------------------------------------------------


def _image() -> Modality:
    from fedssl.augment import normalization
    from fedssl.data.node_images import node_images
    from fedssl.knn import embed
    from fedssl.models.encoders import build_encoder
    from fedssl.probe import PROBE_TASKS, calibrate_batchnorm, load_probe_tasks, probe_backbone, probe_pixels

    def embed_images(backbone: nn.Module, images: np.ndarray, cfg: RunConfig) -> Tensor:
        mean, std = normalization(cfg.model.in_channels)
        return embed(backbone, images, mean, std, cfg.model.in_channels)

    return Modality(
        name="image",
        tasks=PROBE_TASKS,
        raw_baseline="raw-pixels",
        input_hw=lambda cfg: (cfg.model.image_size, cfg.model.image_size),
        build_backbone=lambda cfg: build_encoder(cfg.model),
        node_data=node_images,
        views=lambda cfg: None,
        embed=embed_images,
        load_tasks=lambda cfg: load_probe_tasks(cfg.eval, cfg.model.image_size, seed=cfg.seed),
        probe=lambda backbone, tasks, cfg, linear: probe_backbone(backbone, tasks, cfg.model, cfg.eval, linear),
        probe_raw=lambda tasks, cfg, linear: probe_pixels(tasks, cfg.eval, linear),
        calibrate=lambda backbone, images, cfg: calibrate_batchnorm(backbone, images, cfg.model),
        checkpoint_meta=lambda cfg: {},
        validate=lambda cfg: None,
    )


# --- audio ------------------------------------------------------------------------------------


def audio_frontend_spec(cfg: RunConfig):
    """The log-mel front end a run's ``audio.*`` keys describe (:class:`fedssl.models.frontend.FrontendSpec`)."""
    from fedssl.models.frontend import frontend_spec

    a = cfg.audio
    return frontend_spec(a.sample_rate, a.crop_seconds, a.n_mels, a.win_ms, a.hop_ms, a.mask_fraction)


def _audio() -> Modality:
    from fedssl.audio.augment import AudioAugmentParams, audio_view_batches
    from fedssl.audio.data import node_audio
    from fedssl.audio.probe import (
        AUDIO_TASKS,
        calibrate_audio_batchnorm,
        embed_audio,
        load_audio_tasks,
        probe_audio,
        probe_log_mel,
    )
    from fedssl.models.encoders import build_encoder
    from fedssl.models.frontend import AudioEncoder, LogMel

    def input_hw(cfg: RunConfig) -> tuple[int, int]:
        spec = audio_frontend_spec(cfg)
        return spec.n_mels, spec.frames

    def backbone(cfg: RunConfig) -> nn.Module:
        return AudioEncoder(audio_frontend_spec(cfg), build_encoder(cfg.model, input_hw=input_hw(cfg)))

    def views(cfg: RunConfig) -> ViewSource:
        a = cfg.audio
        params = AudioAugmentParams(crop_samples=audio_frontend_spec(cfg).num_samples, gain_db=a.gain_db,
                                    snr_db=(a.noise_snr_db, a.noise_snr_db + 25.0))
        return lambda clips, batch_size, seed: audio_view_batches(clips, batch_size, seed, params)

    def embed_clips(backbone: nn.Module, clips: np.ndarray, cfg: RunConfig) -> Tensor:
        from fedssl.audio.augment import centre_crops

        return embed_audio(backbone, centre_crops(clips, audio_frontend_spec(cfg).num_samples))

    return Modality(
        name="audio",
        tasks=AUDIO_TASKS,
        raw_baseline="raw-log-mel",
        input_hw=input_hw,
        build_backbone=backbone,
        node_data=node_audio,
        views=views,
        embed=embed_clips,
        load_tasks=load_audio_tasks,
        probe=lambda backbone, tasks, cfg, linear: probe_audio(backbone, tasks, cfg, linear),
        probe_raw=lambda tasks, cfg, linear: probe_log_mel(tasks, cfg, LogMel(audio_frontend_spec(cfg)), linear),
        calibrate=lambda backbone, clips, cfg: calibrate_audio_batchnorm(backbone, clips),
        checkpoint_meta=lambda cfg: {"modality": "audio", "frontend": audio_frontend_spec(cfg).as_dict()},
        validate=validate_audio,
    )


# --- video ------------------------------------------------------------------------------------


def video_checkpoint_meta(cfg: RunConfig) -> dict[str, Any]:
    """What rebuilds a video encoder and says what it takes: ``crop-frames`` grey frames of ``size`` in [0, 1]."""
    from fedssl.video.model import MEAN, STD

    v = cfg.video
    return {"modality": "video", "video": {"encoder": v.encoder, "frames": v.crop_frames, "size": v.size},
            "input": {"layout": "NTHW", "frames": v.crop_frames, "height": v.size, "width": v.size, "channels": 1,
                      "mean": [MEAN], "std": [STD], "scale": "grey pixel/255 (standardised inside the encoder)"}}


def _video() -> Modality:
    from fedssl.video.augment import VideoAugmentParams, centre_crops, video_view_batches
    from fedssl.video.data import node_video
    from fedssl.video.model import build_video_encoder
    from fedssl.video.probe import (
        VIDEO_TASKS,
        calibrate_video_batchnorm,
        embed_video,
        load_video_tasks,
        probe_raw_pixels,
        probe_video,
    )

    def views(cfg: RunConfig) -> ViewSource:
        v = cfg.video
        window = 0 if cfg.ssl.method == "playback-speed" else v.crop_frames  # speed picks its own frames
        params = VideoAugmentParams(crop_frames=window, crop_scale=(v.crop_min_scale, 1.0))
        return lambda clips, batch_size, seed: video_view_batches(clips, batch_size, seed, params)

    return Modality(
        name="video",
        tasks=VIDEO_TASKS,
        raw_baseline="raw-pixels",
        input_hw=lambda cfg: (cfg.video.size, cfg.video.size),
        build_backbone=lambda cfg: build_video_encoder(cfg.video.encoder),
        node_data=node_video,
        views=views,
        embed=lambda backbone, clips, cfg: embed_video(backbone, centre_crops(clips, cfg.video.crop_frames)),
        load_tasks=load_video_tasks,
        probe=lambda backbone, tasks, cfg, linear: probe_video(backbone, tasks, cfg, linear),
        probe_raw=lambda tasks, cfg, linear: probe_raw_pixels(tasks, cfg, linear),
        calibrate=lambda backbone, clips, cfg: calibrate_video_batchnorm(backbone, clips),
        checkpoint_meta=video_checkpoint_meta,
        validate=validate_video,
    )


MODALITIES.add("image", _image())
MODALITIES.add("audio", _audio())
MODALITIES.add("video", _video())
