"""The audio front end, inside the encoder: raw waveform -> log-mel spectrogram -> a CNN backbone.

Computed with ``torch.stft`` and a mel filterbank built here (torchaudio's binary does not load
with the pinned torch), so the exported ONNX model takes the waveform itself and a device needs
nothing but onnxruntime. The filterbank follows the HTK mel scale with triangular filters and no
area normalisation (torchaudio's ``MelScale`` default; librosa's ``mel(htk=True, norm=None)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from fedssl.models.encoders import Encoder


@dataclass(frozen=True)
class FrontendSpec:
    """What the front end computes; saved in checkpoints so export rebuilds it exactly."""

    sample_rate: int = 16000
    num_samples: int = 12000  # the waveform length the encoder takes
    n_mels: int = 40
    win_length: int = 400
    hop_length: int = 240
    f_min: float = 20.0
    mask_fraction: float = 0.15  # SpecAugment in training mode only

    @property
    def n_fft(self) -> int:
        return 1 << (self.win_length - 1).bit_length()  # the next power of two

    @property
    def frames(self) -> int:
        return 1 + self.num_samples // self.hop_length  # torch.stft(center=True)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def hz_to_mel(f: Tensor | float) -> Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """Triangular filters on the HTK mel scale.

    Shape: (n_freqs, n_mels), for a power spectrum of ``n_freqs = n_fft // 2 + 1`` bins.
    Raises:
        ValueError: if the band is empty or holds fewer FFT bins than filters would need.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"mel band [{f_min}, {f_max}] Hz must lie inside [0, {sample_rate / 2}]")
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                                     dtype=torch.float64))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]  # (n_mels,)
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()  # (n_freqs, n_mels)


class LogMel(nn.Module):
    """Waveform -> per-clip standardised log-mel spectrogram.

    Standardising each clip (zero mean, unit variance over all bins) makes the encoder blind to
    recording level, which the gain augmentation asks of it anyway, and needs no statistics.
    Shape: (batch, num_samples) -> (batch, 1, n_mels, frames)
    """

    def __init__(self, spec: FrontendSpec) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("window", torch.hann_window(spec.win_length), persistent=False)
        self.register_buffer("fbank", mel_filterbank(spec.n_fft // 2 + 1, spec.n_mels, spec.sample_rate,
                                                     spec.f_min), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        s = self.spec
        stft = torch.stft(wave, s.n_fft, s.hop_length, s.win_length, self.window, center=True,
                          pad_mode="reflect", return_complex=True)  # (batch, n_fft // 2 + 1, frames)
        power = stft.real.pow(2) + stft.imag.pow(2)
        mel = torch.matmul(power.transpose(1, 2), self.fbank).transpose(1, 2)  # (batch, n_mels, frames)
        logmel = torch.log(mel + 1e-6)
        mean = logmel.mean(dim=(1, 2), keepdim=True)
        std = logmel.std(dim=(1, 2), keepdim=True)
        return ((logmel - mean) / (std + 1e-5)).unsqueeze(1)  # (batch, 1, n_mels, frames)


def spec_mask(x: Tensor, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """SpecAugment: one band of up to ``fraction`` of the mel bins and one of the frames per clip set to 0
    (the standardised mean) [0].

    [0] SpecAugment, 2019, arXiv:1904.08779
    Shape: (batch, 1, n_mels, frames) -> the same
    """
    if fraction <= 0:
        return x
    b, _, n_mels, frames = x.shape
    out = x
    for size, axis in ((n_mels, 2), (frames, 3)):
        width = (torch.rand(b, generator=generator) * fraction * size).long()  # (batch,)
        start = (torch.rand(b, generator=generator) * (size - width + 1).float()).long()
        pos = torch.arange(size).view(1, -1)
        band = (pos >= start.view(-1, 1)) & (pos < (start + width).view(-1, 1))  # (batch, size)
        shape = (b, 1, size, 1) if axis == 2 else (b, 1, 1, size)
        out = out.masked_fill(band.view(shape).to(out.device), 0.0)
    return out


class AudioEncoder(Encoder):
    """A front end plus an image backbone on its ``1 x n_mels x frames`` output.

    ``forward`` (what export ships and probes use): waveform -> embedding. In training mode the
    SSL features see a SpecAugment-masked spectrogram; evaluation never masks.
    Shape: (batch, num_samples) -> (batch, embedding_dim)
    """

    def __init__(self, spec: FrontendSpec, backbone: nn.Module) -> None:
        super().__init__()
        self.frontend = LogMel(spec)
        self.backbone = backbone
        self.ssl_dim = getattr(backbone, "ssl_dim", 0)

    def forward(self, wave: Tensor) -> Tensor:
        return self.backbone(self.frontend(wave))

    def ssl_features(self, wave: Tensor) -> Tensor:
        x = self.frontend(wave)
        if self.training:
            x = spec_mask(x, self.frontend.spec.mask_fraction)
        features = getattr(self.backbone, "ssl_features", None)
        return features(x) if features is not None else self.backbone(x)


def frontend_spec(sample_rate: int, crop_seconds: float, n_mels: int, win_ms: float, hop_ms: float,
                  mask_fraction: float) -> FrontendSpec:
    """A spec from the run config's units (seconds, milliseconds)."""
    return FrontendSpec(sample_rate=sample_rate, num_samples=int(round(crop_seconds * sample_rate)), n_mels=n_mels,
                        win_length=int(round(win_ms * sample_rate / 1000)),
                        hop_length=int(round(hop_ms * sample_rate / 1000)), mask_fraction=mask_fraction)


__all__ = ["AudioEncoder", "FrontendSpec", "LogMel", "frontend_spec", "mel_filterbank", "spec_mask",
           "hz_to_mel", "mel_to_hz"]
