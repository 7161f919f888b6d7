"""Replies as they arrive: the Grid's push/pull instead of ``send_and_receive``'s list at the deadline.

Flower's ``Grid.send_and_receive`` pushes a round's messages, then pulls until every reply is in or the
deadline passes, and returns them all in one list: the ServerApp holds every reply of the round at once
(1,000 ResNet-18 replies are 42 GB). :class:`StreamingGrid` keeps the same contract (same push, same
deadline, late replies left behind, Flower's error replies passed on) but returns an iterator that pulls
a few message ids at a time and yields each reply, so a strategy that folds and drops each one holds
at most ``pull_batch`` replies. Everything else is the wrapped Grid's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from flwr.app import Message
from flwr.common.logger import log
from flwr.serverapp import Grid

PULL_BATCH = 2  # message ids per pull: replies held at once while the strategy folds them
POLL_INTERVAL_S = 1.0  # pause after a pass over the pending ids that brought nothing


class ReplyStream(Iterable[Message]):
    """The replies to ``message_ids``, pulled ``pull_batch`` ids at a time until all are in or the deadline.

    Iterate it once. ``pending`` is what had not replied when iteration ended (late replies stay in the
    SuperLink, as with ``send_and_receive``).
    """

    def __init__(self, grid: Grid, message_ids: Iterable[str], timeout: float | None,
                 pull_batch: int = PULL_BATCH, poll_interval: float = POLL_INTERVAL_S) -> None:
        if pull_batch < 1:
            raise ValueError(f"pull_batch must be at least 1, got {pull_batch}")
        self._grid = grid
        self.pending: dict[str, None] = dict.fromkeys(message_ids)  # ordered set
        self.expected = len(self.pending)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._pull_batch, self._poll_interval = pull_batch, poll_interval

    def _time_left(self) -> float:
        return float("inf") if self._deadline is None else self._deadline - time.monotonic()

    def __iter__(self) -> Iterator[Message]:
        while self.pending and self._time_left() > 0:
            arrived = 0
            ids = list(self.pending)
            for start in range(0, len(ids), self._pull_batch):
                for msg in self._grid.pull_messages(ids[start:start + self._pull_batch]):
                    if msg.metadata.reply_to_message_id in self.pending:  # a duplicate is dropped
                        del self.pending[msg.metadata.reply_to_message_id]
                        arrived += 1
                        yield msg
                if self._time_left() <= 0:
                    break
            if not arrived and self.pending:
                time.sleep(max(0.0, min(self._poll_interval, self._time_left())))
        if self.pending:
            log(logging.WARNING, "[fedssl] %d of %d replies did not arrive before the round's deadline",
                len(self.pending), self.expected)


class StreamingGrid:
    """A Grid whose ``send_and_receive`` returns a :class:`ReplyStream`; every other call goes to ``grid``."""

    def __init__(self, grid: Grid, pull_batch: int = PULL_BATCH, poll_interval: float = POLL_INTERVAL_S) -> None:
        self._grid = grid
        self._pull_batch, self._poll_interval = pull_batch, poll_interval

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push now (as Flower does); the replies come from iterating the result. No messages: ``[]``."""
        message_ids = list(self._grid.push_messages(messages))
        if not message_ids:
            return []
        return ReplyStream(self._grid, message_ids, timeout, self._pull_batch, self._poll_interval)

    def __getattr__(self, name: str):
        return getattr(self._grid, name)
