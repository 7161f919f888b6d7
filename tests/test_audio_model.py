"""Audio front end, encoder, augmentation and SSL objectives, against mathematics and hand-made signals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedssl.audio.augment import AudioAugment, AudioAugmentParams, centre_crops, random_crops
from fedssl.config import RunConfig
from fedssl.modality import MODALITIES, audio_frontend_spec, build_backbone
from fedssl.models.frontend import FrontendSpec, LogMel, hz_to_mel, mel_filterbank, mel_to_hz, spec_mask
from fedssl.ssl import build_ssl_model
from fedssl.ssl.segment_order import permutations, shuffle_segments
from launcher.flwr_cli import AUDIO_RUN

SPEC = FrontendSpec()


def test_mel_scale_round_trips_and_matches_the_htk_formula():
    f = torch.tensor([0.0, 100.0, 1000.0, 8000.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(f)), f)
    assert float(hz_to_mel(1000.0)) == pytest.approx(2595 * math.log10(1 + 1000 / 700))


def test_filterbank_triangles_peak_at_their_centres_and_tile_the_band():
    fb = mel_filterbank(257, 40, 16000, f_min=20.0)  # (freqs, mels)
    assert fb.shape == (257, 40) and (fb >= 0).all() and fb.max() <= 1.0
    peaks = fb.argmax(0)
    assert (peaks[1:] >= peaks[:-1]).all()  # filters ordered by frequency
    freqs = torch.linspace(0, 8000, 257)
    centres = mel_to_hz(torch.linspace(float(hz_to_mel(20.0)), float(hz_to_mel(8000.0)), 42))[1:-1].float()
    inside = (freqs >= centres[0]) & (freqs <= centres[-1])
    assert torch.allclose(fb[inside].sum(1), torch.ones(int(inside.sum())), atol=1e-4)  # neighbours sum to 1
    with pytest.raises(ValueError, match="mel band"):
        mel_filterbank(257, 40, 16000, f_min=9000.0)


@pytest.mark.parametrize("hz", [300.0, 1200.0, 4000.0])
def test_a_tone_lights_the_mel_band_of_its_frequency(hz):
    t = torch.arange(SPEC.num_samples) / SPEC.sample_rate
    x = LogMel(SPEC)(torch.sin(2 * math.pi * hz * t)[None])  # (1, 1, mels, frames)
    assert x.shape == (1, 1, SPEC.n_mels, SPEC.frames)
    fb = mel_filterbank(SPEC.n_fft // 2 + 1, SPEC.n_mels, SPEC.sample_rate, SPEC.f_min)
    expected = int(fb[round(hz / (SPEC.sample_rate / SPEC.n_fft))].argmax())
    assert abs(int(x[0, 0, :, SPEC.frames // 2].argmax()) - expected) <= 1


def test_log_mel_is_blind_to_level():
    wave = torch.randn(2, SPEC.num_samples) * 0.1
    front = LogMel(SPEC)
    assert torch.allclose(front(wave), front(wave * 8.0), atol=1e-3)


def test_spec_mask_zeroes_at_most_the_fraction_in_one_band_per_axis():
    x = torch.ones(64, 1, 40, 51)
    masked = spec_mask(x, 0.2, torch.Generator().manual_seed(0))
    zero_rows = (masked[:, 0] == 0).all(2).sum(1)  # fully masked mel bands per clip
    zero_cols = (masked[:, 0] == 0).all(1).sum(1)
    assert zero_rows.max() <= 0.2 * 40 and zero_cols.max() <= 0.2 * 51 and (masked == 0).any()
    assert torch.equal(spec_mask(x, 0.0), x)


def test_random_crops_are_contiguous_pieces_of_each_clip():
    clips = torch.arange(4 * 100, dtype=torch.float32).view(4, 100)
    crops = random_crops(clips, 30, torch.Generator().manual_seed(0))
    assert crops.shape == (4, 30)
    assert torch.equal(crops[:, 1:] - crops[:, :-1], torch.ones(4, 29))  # consecutive samples
    assert ((crops[:, 0] // 100) == torch.arange(4)).all()  # each from its own clip
    assert np.array_equal(centre_crops(clips.numpy(), 30)[:, 0], np.array([35, 135, 235, 335]))
    with pytest.raises(ValueError, match="shorter"):
        random_crops(clips, 101, torch.Generator())


def test_augmented_views_differ_and_keep_the_signal():
    t = torch.arange(16000) / 16000
    clips = torch.sin(2 * math.pi * 440 * t).repeat(8, 1)
    augment = AudioAugment(AudioAugmentParams(crop_samples=12000, gain_db=6.0, snr_db=(20.0, 30.0), noise_p=1.0))
    gen = torch.Generator().manual_seed(0)
    a, b = augment(clips, gen), augment(clips, gen)
    assert a.shape == (8, 12000) and not torch.allclose(a, b)
    rms = a.pow(2).mean(1).sqrt()
    assert ((rms > 0.7 * 10 ** (-6 / 20) / 1.1) & (rms < 0.7072 * 10 ** (6 / 20) * 1.1)).all()  # gain within +-6 dB


def test_segments_are_permuted_and_the_label_names_the_permutation():
    x = torch.arange(10, dtype=torch.float32).repeat(64, 1)  # 3 segments of 3 + one remainder sample
    shuffled, labels = shuffle_segments(x, 3, torch.Generator().manual_seed(0))
    orders = permutations(3)
    assert orders.shape == (6, 3) and orders[0].tolist() == [0, 1, 2]
    for row, label in zip(shuffled, labels):
        expected = torch.cat([torch.arange(3 * s, 3 * s + 3) for s in orders[label]] + [torch.tensor([9])])
        assert torch.equal(row, expected.float())
    assert len(set(labels.tolist())) == 6
    with pytest.raises(ValueError, match="segments"):
        shuffle_segments(torch.zeros(2, 2), 3)


AUDIO = RunConfig.from_flat({**AUDIO_RUN, "train.batch-size": 8})


@pytest.mark.parametrize("method", ["simclr", "barlowtwins", "segment-order"])
def test_audio_ssl_methods_learn_from_waveforms_and_only_the_backbone_travels(method):
    torch.manual_seed(0)
    cfg = RunConfig.from_flat({**AUDIO_RUN, "ssl.method": method})
    model = build_ssl_model(cfg.ssl, cfg.model, backbone=build_backbone(cfg))
    views = MODALITIES.get("audio").views(cfg)
    clips = np.random.default_rng(0).normal(0, 0.1, (16, 16000)).astype(np.float32)
    a, b = next(views(clips, 8, 0))
    assert a.shape == (8, audio_frontend_spec(cfg).num_samples)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        torch.manual_seed(1)  # the same masks and segment orders every step: the same problem
        loss = model(a, b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]  # the same batch: loss must fall
    assert all(k.startswith("backbone.") for k in model.backbone_state())
    assert not any("fbank" in k or "window" in k for k in model.state_dict())  # the front end's constants never travel


def test_modality_switch_checks_its_own_tasks_and_input():
    with pytest.raises(ValueError, match="data.modality.*'lidar'"):
        RunConfig.from_flat({"data.modality": "lidar"})
    with pytest.raises(ValueError, match="eval.tasks.*fashion-mnist.*speech-words"):
        RunConfig.from_flat({**AUDIO_RUN, "eval.tasks": "fashion-mnist"})
    with pytest.raises(ValueError, match="model.embedding-dim.*audio input 40x51.*3840"):
        RunConfig.from_flat({**AUDIO_RUN, "model.embedding-dim": 1152})
    with pytest.raises(ValueError, match="audio.crop-seconds"):
        RunConfig.from_flat({**AUDIO_RUN, "audio.crop-seconds": 2.0})
    assert MODALITIES.names() == ("image", "audio", "video")
    assert MODALITIES.get("audio").input_hw(AUDIO) == (40, 51)
