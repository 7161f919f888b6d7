"""One registry per concept (SSL methods, encoders, partitioners, probe tasks, aggregation rules).

A registry maps the names a run-config key accepts to what builds them. Adding a method, an
encoder or a rule is one new module plus one registration; the allowed values in validation and
in every error message are read from the registry, never written out again.

    ENCODERS: Registry[EncoderBuilder] = Registry("model.encoder")

    @ENCODERS.register("smallcnn")
    def _smallcnn(cfg: ModelConfig) -> nn.Module: ...

    ENCODERS.get("smallcnn")  # the builder; an unknown name raises ValueError listing the names
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> entries for one run-config key, in registration order.

    Args:
        key: the run-config key whose values this registry holds (e.g. ``ssl.method``); error
            messages name it.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; returns it.

        Raises:
            ValueError: if ``name`` is already taken (two modules claiming one name is a bug).
        """
        if name in self._entries:
            raise ValueError(f"{self.key}: {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that registers what it decorates under ``name`` (see :meth:`add`)."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        """The entry registered as ``name``.

        Raises:
            ValueError: naming the key, the value and every registered name.
        """
        self.check(name)
        return self._entries[name]

    def check(self, name: str) -> str:
        """``name`` itself if registered.

        Raises:
            ValueError: ``run config '<key>' = '<name>' is not one of [<names>]``.
        """
        if name not in self._entries:
            raise ValueError(f"run config '{self.key}' = {name!r} is not one of {list(self.names())}")
        return name

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.key!r}, {list(self._entries)})"


# run-config "mode": how the encoder is trained; the ServerApp dispatches on it.
MODES: Registry[str] = Registry("mode")
MODES.add("full", "every sampled device trains the whole backbone locally; the server averages (FedAvg family)")
MODES.add("split", "MocoSFL: devices train a small stem, the server the trunk with one MoCo queue")
