"""The MoCo feature memory kept on the server: one FIFO of keys shared by every device, or one per device.

Sharing the memory is MocoSFL's "feature sharing": a device's queries meet negatives drawn from
every device's images, which a device holding two classes cannot supply itself.
[0] MocoSFL, Li et al., ICLR 2023
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class FeatureQueue:
    """A ring buffer of ``size`` L2-normalised keys, oldest overwritten first.

    Starts with random unit vectors, as MoCo does; ``filled`` counts real keys written (at most ``size``).
    Shape: keys (n, dim)
    """

    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None) -> None:
        if size < 1 or dim < 1:
            raise ValueError(f"a feature queue needs size >= 1 and dim >= 1, got {size} x {dim}")
        self.keys = F.normalize(torch.randn(size, dim, generator=generator), dim=1)
        self.ptr = 0
        self.filled = 0

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @property
    def fill(self) -> float:
        """Fraction of the queue holding real keys (1.0 once it has wrapped)."""
        return self.filled / self.size

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` after the newest ones; a batch larger than the queue keeps its last ``size`` keys."""
        keys = keys.detach()[-self.size:]
        idx = (self.ptr + torch.arange(keys.shape[0])) % self.size
        self.keys[idx] = keys.to(self.keys.dtype)
        self.ptr = (self.ptr + keys.shape[0]) % self.size
        self.filled = min(self.filled + keys.shape[0], self.size)

    def state_dict(self) -> dict[str, object]:
        return {"keys": self.keys.clone(), "ptr": self.ptr, "filled": self.filled}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> FeatureQueue:
        keys = state["keys"]
        assert isinstance(keys, Tensor)
        queue = cls(keys.shape[0], keys.shape[1])
        queue.keys, queue.ptr, queue.filled = keys.clone(), int(state["ptr"]), int(state["filled"])  # type: ignore[arg-type]
        return queue
