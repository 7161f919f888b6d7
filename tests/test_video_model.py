"""Video encoders, temporally consistent views, the video pretext tasks and the video run config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedssl.checkpoint import load_encoder, save_encoder
from fedssl.config import RunConfig
from fedssl.modality import MODALITIES, video_checkpoint_meta
from fedssl.ssl import BACKBONE_PREFIX, METHODS, build_ssl_model
from fedssl.ssl.catch_the_patch import CatchThePatchLoss, centres_from_path, paste_moving_patch
from fedssl.ssl.playback_speed import SPEEDS, speed_windows
from fedssl.video.augment import VideoAugment, VideoAugmentParams, centre_crops, temporal_crops, video_view_batches
from fedssl.video.model import EMBEDDING_DIMS, build_video_encoder

VIDEO = {"data.modality": "video", "eval.tasks": "video-motion,video-object", "model.readout": "pool",
         "model.embedding-dim": 80, "train.channels-last": False}


@pytest.mark.parametrize("name", ["r3d-tiny", "r3d-18"])
def test_encoders_pool_a_clip_into_their_embedding(name):
    torch.manual_seed(0)
    encoder = build_video_encoder(name).eval()
    x = torch.rand(2, 8, 32, 32)
    z = encoder(x)
    assert z.shape == (2, EMBEDDING_DIMS[name]) and torch.isfinite(z).all()
    assert encoder(torch.rand(1, 16, 32, 32)).shape == (1, EMBEDDING_DIMS[name])  # any length: pooled
    assert not torch.allclose(encoder(x.flip(1)), z, atol=1e-4)  # frame order matters: a 3D CNN sees time


def test_tiny_encoder_size():
    params = sum(p.numel() for p in build_video_encoder("r3d-tiny").parameters())
    assert 0.25e6 < params < 0.45e6


def test_views_share_one_crop_across_frames_and_start_at_different_frames():
    clip = np.broadcast_to(np.arange(16, dtype=np.uint8)[:, None, None] * 15, (16, 32, 32)).copy()
    clip[:, :16, :] += 5  # a horizontal edge, so a crop shows where it is
    batch = torch.from_numpy(np.stack([clip] * 64))
    params = VideoAugmentParams(crop_frames=8, crop_scale=(0.3, 0.6), brightness=0.0, contrast=0.0)
    gen = torch.Generator().manual_seed(0)
    view = VideoAugment(params)(batch, gen)
    assert view.shape == (64, 8, 32, 32) and view.min() >= 0 and view.max() <= 1
    step = view[:, 1:] - view[:, :-1]  # consecutive frames differ by the same 15/255 everywhere: one crop for all
    assert torch.allclose(step, torch.full_like(step, 15 / 255), atol=2e-3)
    first = view[:, 0].mean(dim=(1, 2)) * 255
    starts = torch.round((first - 2.5) / 15)
    assert len(set(starts.tolist())) > 4  # windows start at many offsets (0..8)
    assert starts.min() >= 0 and starts.max() <= 8
    a, b = next(video_view_batches(np.stack([clip] * 8), 8, 0, params))
    assert not torch.equal(a, b)


def test_temporal_and_centre_crops():
    clips = torch.arange(16).view(1, 16, 1, 1).expand(3, 16, 2, 2).contiguous()
    out = temporal_crops(clips, 5, torch.Generator().manual_seed(1))
    assert (out[:, 1:] - out[:, :-1] == 1).all()
    assert centre_crops(clips.numpy(), 8)[0, :, 0, 0].tolist() == list(range(4, 12))
    with pytest.raises(ValueError, match="shorter"):
        temporal_crops(clips, 17, torch.Generator())


def test_speed_windows_take_every_frame_or_every_second_frame():
    clips = torch.arange(16.0).view(1, 16, 1, 1).expand(64, 16, 4, 4)
    windows, labels = speed_windows(clips, torch.Generator().manual_seed(0))
    assert windows.shape == (64, 8, 4, 4) and set(labels.tolist()) == {0, 1}
    steps = windows[:, 1:, 0, 0] - windows[:, :-1, 0, 0]
    assert (steps == torch.tensor(SPEEDS, dtype=torch.float32)[labels][:, None]).all()
    with pytest.raises(ValueError):
        speed_windows(torch.zeros(1, 3, 4, 4))


def test_the_pasted_patch_is_where_its_centres_say():
    clips = torch.zeros(4, 8, 32, 32)
    out, centres = paste_moving_patch(clips, torch.Generator().manual_seed(0))
    assert centres.shape == (4, 8, 2) and centres.abs().max() <= 1
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    mask = (out > 0).float()  # the patch is half noise: never zero
    assert torch.allclose(mask.sum(dim=(2, 3)), torch.full((4, 8), 64.0))  # an 8x8 patch on every frame
    cx = (mask * xs).sum(dim=(2, 3)) / 64 + 0.5
    cy = (mask * ys).sum(dim=(2, 3)) / 64 + 0.5
    assert torch.allclose(torch.stack([cx, cy], -1) / 32 * 2 - 1, centres, atol=1e-5)
    path = torch.cat([centres[:, 0], centres[:, -1]], 1)
    assert CatchThePatchLoss()(path, centres) < 1e-3  # a straight path: start and end give every frame
    assert torch.allclose(centres_from_path(path, 8), centres, atol=2 / 32 + 1e-6)  # corners rounded: one pixel


@pytest.mark.parametrize("method", ["simclr", "byol", "playback-speed", "catch-the-patch"])
def test_every_video_method_trains_the_backbone(method):
    torch.manual_seed(0)
    cfg = RunConfig.from_flat({**VIDEO, "ssl.method": method, "ssl.hidden-dim": 32, "ssl.proj-dim": 16})
    model = build_ssl_model(cfg.ssl, cfg.model, backbone=MODALITIES.get("video").build_backbone(cfg))
    clips = np.random.default_rng(0).integers(0, 255, (6, 16, 32, 32), dtype=np.uint8)
    a, b = next(MODALITIES.get("video").views(cfg)(clips, 6, 0))
    assert a.shape[1] == (16 if method == "playback-speed" else 8)
    loss = model(a, b)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(p.grad is not None for p in model.backbone.parameters())
    assert model.local_state() and not any(k.startswith(BACKBONE_PREFIX) for k in model.local_state())


def test_video_checkpoint_rebuilds_the_encoder(tmp_path):
    cfg = RunConfig.from_flat(VIDEO)
    encoder = build_video_encoder("r3d-tiny").eval()
    save_encoder(tmp_path / "e.pt", encoder.state_dict(), cfg.model, **video_checkpoint_meta(cfg))
    loaded, meta = load_encoder(tmp_path / "e.pt")
    assert meta["modality"] == "video" and meta["input"]["layout"] == "NTHW" and meta["input"]["frames"] == 8
    x = torch.rand(2, 8, 32, 32)
    assert torch.equal(loaded(x), encoder(x))


@pytest.mark.parametrize(("override", "match"), [
    ({"model.embedding-dim": 1152}, "model.embedding-dim=80"),
    ({"video.encoder": "r3d-18"}, "model.embedding-dim=512"),
    ({"train.channels-last": True}, "train.channels-last"),
    ({"video.crop-frames": 32}, "video.crop-frames"),
    ({"ssl.method": "rotation"}, "ssl.method"),
    ({"ssl.method": "playback-speed", "video.crop-frames": 12}, "twice"),
    ({"eval.tasks": "fashion-mnist"}, "eval.tasks"),
    ({"video.encoder": "c3d"}, "video.encoder"),
])
def test_bad_video_config_names_the_key(override, match):
    with pytest.raises(ValueError, match=match):
        RunConfig.from_flat({**VIDEO, **override})


def test_video_pretexts_need_video():
    assert {"playback-speed", "catch-the-patch"} <= set(METHODS.names())
    with pytest.raises(ValueError, match="data.modality"):
        RunConfig.from_flat({"ssl.method": "catch-the-patch"})
