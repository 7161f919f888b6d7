"""Replies as they arrive (server_app/reply_stream.py), and a streamed round that holds one reply at a time.

The Grid here is a scripted stand-in for the SuperLink (replies become available at set times), because
arrival order, deadlines and how many replies are pulled at once cannot be controlled through a real
SuperLink; the real one drives the same code in every federation test (streaming is the default).
"""

from __future__ import annotations

import time
import weakref

import numpy as np
import pytest
from flwr.app import Message

from server_app.reply_stream import ReplyStream, StreamingGrid
from tests.test_strategy import message, strategy, update


class ScriptedGrid:
    """``push_messages`` gives ids ``i<node>``; the reply of node k becomes pullable ``arrive[k]`` s later."""

    def __init__(self, arrive: dict[int, float], duplicate: int | None = None) -> None:
        self.arrive, self.duplicate = arrive, duplicate
        self.started = 0.0
        self.pulls: list[list[str]] = []
        self.node_ids = list(arrive)

    def push_messages(self, messages) -> list[str]:
        self.started = time.monotonic()
        return [f"i{m}" for m in messages]

    def pull_messages(self, message_ids) -> list[Message]:
        ids = list(message_ids)
        self.pulls.append(ids)
        now = time.monotonic() - self.started
        ready = [int(i[1:]) for i in ids if self.arrive[int(i[1:])] <= now]
        out = [message(node, update(1.0)) for node in ready]
        if self.duplicate in ready:
            out.append(message(self.duplicate, update(1.0)))
        return out

    def get_node_ids(self) -> list[int]:
        return self.node_ids


def test_replies_are_yielded_as_they_arrive_each_once_pulling_a_few_ids_at_a_time():
    grid = ScriptedGrid({1: 0.0, 2: 0.0, 3: 0.3, 4: 0.0, 5: 0.0, 6: 0.0}, duplicate=2)
    stream = StreamingGrid(grid, pull_batch=2, poll_interval=0.05).send_and_receive(list(grid.arrive), timeout=5)
    got = []
    for msg in stream:
        got.append((msg.metadata.src_node_id, time.monotonic() - grid.started))
    assert sorted(node for node, _ in got) == [1, 2, 3, 4, 5, 6]  # node 2's duplicate is dropped
    assert got[-1][0] == 3 and got[-1][1] >= 0.3 and all(t < 0.3 for _, t in got[:-1])  # not held for the last
    assert max(len(ids) for ids in grid.pulls) == 2 and stream.pending == {}


def test_a_reply_after_the_deadline_is_left_behind_and_named_pending(caplog):
    grid = ScriptedGrid({1: 0.0, 2: 30.0})
    started = time.monotonic()
    stream = StreamingGrid(grid, poll_interval=0.05).send_and_receive([1, 2], timeout=0.4)
    assert [m.metadata.src_node_id for m in stream] == [1]
    assert 0.4 <= time.monotonic() - started < 2.0 and list(stream.pending) == ["i2"]
    assert "1 of 2 replies did not arrive" in caplog.text


def test_no_messages_means_no_stream_and_other_calls_reach_the_grid():
    grid = ScriptedGrid({1: 0.0})
    streaming = StreamingGrid(grid)
    assert streaming.send_and_receive([], timeout=1) == []
    assert streaming.get_node_ids() == [1]
    with pytest.raises(ValueError, match="pull_batch"):
        ReplyStream(grid, ["i1"], None, pull_batch=0)


@pytest.mark.parametrize("streaming", [True, False])
def test_a_streamed_round_holds_one_reply_at_a_time_a_collected_round_all_of_them(streaming):
    """Count the reply Messages alive each time the next one is produced (weak references: a Message is
    freed when its last reference goes)."""
    fed = strategy(**{"aggregation.streaming": streaming})
    alive: weakref.WeakSet = weakref.WeakSet()
    most = 0

    def arriving():
        nonlocal most
        for node in range(1, 21):
            most = max(most, len(alive))
            msg = message(node, update(1.0 + node / 100), n=10.0)
            alive.add(msg)
            yield msg

    arrays, _ = fed.aggregate_train(1, arriving())
    assert fed.round_record(1).accepted == 20
    np.testing.assert_allclose(arrays["backbone.w"].numpy(), 1.0 + np.mean(np.arange(1, 21)) / 100, rtol=1e-6)
    assert most <= 1 if streaming else most == 19
