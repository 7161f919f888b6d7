"""Two random views of every clip of a batch, in torch, for audio SSL.

Each view is a random crop of the clip (``audio.crop-seconds``), a random gain and additive
white noise at a random SNR, each clip with its own parameters; time and frequency masking
(SpecAugment) follow inside the encoder, on its log-mel spectrogram, in training mode. As for
images, one batched call per view: no per-sample Python loop.

[0] BYOL for Audio, 2021, arXiv:2103.06695 (random crops of one clip as the two views)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class AudioAugmentParams:
    crop_samples: int = 12000
    gain_db: float = 6.0  # gain drawn from [-gain_db, gain_db]
    snr_db: tuple[float, float] = (15.0, 40.0)  # white noise at an SNR drawn from this range
    noise_p: float = 0.8


def random_crops(clips: Tensor, length: int, generator: torch.Generator) -> Tensor:
    """A crop of ``length`` samples at a random offset in each clip.

    Shape: (batch, samples) -> (batch, length)
    Raises:
        ValueError: if the clips are shorter than ``length``.
    """
    b, n = clips.shape
    if n < length:
        raise ValueError(f"clips of {n} samples are shorter than the crop of {length}")
    start = (torch.rand(b, generator=generator) * (n - length + 1)).long()  # (batch,)
    return torch.gather(clips, 1, start[:, None] + torch.arange(length)[None])


def centre_crops(clips: np.ndarray | Tensor, length: int) -> np.ndarray:
    """The middle ``length`` samples of each clip (evaluation and export). Shape: (N, samples) -> (N, length)"""
    start = (clips.shape[1] - length) // 2
    return np.ascontiguousarray(np.asarray(clips)[:, start:start + length])


class AudioAugment:
    """One random view of every clip. Shape: float (batch, samples) -> float (batch, crop_samples)"""

    def __init__(self, params: AudioAugmentParams = AudioAugmentParams()) -> None:
        self.p = params

    def __call__(self, clips: Tensor, generator: torch.Generator) -> Tensor:
        b = clips.shape[0]
        x = random_crops(clips, self.p.crop_samples, generator)
        gain = 10 ** ((torch.rand(b, 1, generator=generator) * 2 - 1) * self.p.gain_db / 20)
        x = x * gain
        low, high = self.p.snr_db
        snr = low + torch.rand(b, 1, generator=generator) * (high - low)
        power = x.pow(2).mean(1, keepdim=True) + 1e-10
        on = (torch.rand(b, 1, generator=generator) < self.p.noise_p).float()
        noise = torch.randn(x.shape, generator=generator) * (power / 10 ** (snr / 10)).sqrt()
        return x + on * noise


def audio_view_batches(clips: np.ndarray, batch_size: int, seed: int,
                       params: AudioAugmentParams) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless ``(view_a, view_b)`` waveform batches, epoch after epoch (``train_local``'s ``views``)."""
    generator = torch.Generator().manual_seed(seed)
    augment = AudioAugment(params)
    data = torch.from_numpy(np.array(clips, dtype=np.float32))  # (N, samples), an own writable copy
    while True:
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data) - batch_size + 1, batch_size):
            batch = data[order[start:start + batch_size]]
            yield augment(batch, generator), augment(batch, generator)
