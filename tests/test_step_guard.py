"""The step guard: norm clipping from recent rounds and direction screening, with one or two replies a round."""

from __future__ import annotations

import numpy as np
import pytest

from fedssl.config import FilterConfig
from server_app.step_guard import ClippedStep, StepGuard
from tests.test_strategy import GLOBAL, message, strategy, update

W = "backbone.w"


def test_a_clipped_step_keeps_its_direction_and_integer_buffers():
    ref = {W: np.ones((2, 2), np.float32), "n": np.array(3, np.int64)}
    clipped = ClippedStep({W: np.full((2, 2), 5.0, np.float32), "n": np.array(9, np.int64)}, ref, 0.25)
    np.testing.assert_allclose(clipped[W], 1.0 + 0.25 * 4.0)
    assert clipped[W].dtype == np.float32 and int(clipped["n"]) == 9 and list(clipped) == [W, "n"]


def test_the_bound_comes_from_recent_rounds_or_the_first_rounds_own_median():
    guard = StepGuard(FilterConfig(clip_ratio=3.0, norm_history=2))
    assert guard.bound([1.0, 2.0]) is None  # no history, too few replies for a median
    assert guard.bound([1.0, 2.0, 4.0]) == pytest.approx(6.0)
    for median in (1.0, 2.0, 10.0):  # only the last two rounds count
        guard.observe([median], GLOBAL, GLOBAL)
    assert guard.bound([100.0]) == pytest.approx(3.0 * np.median([2.0, 10.0]))
    restored = StepGuard(FilterConfig(clip_ratio=3.0, norm_history=2))
    restored.load_state(guard.state())
    assert restored.bound([]) == guard.bound([])
    assert StepGuard(FilterConfig(clip_ratio=0.0)).bound([1.0, 2.0, 3.0]) is None


@pytest.mark.parametrize("streaming", [True, False])
def test_one_scaled_reply_moves_the_model_at_most_the_bound_after_an_honest_round(streaming):
    fed = strategy(**{"aggregation.streaming": streaming})  # defaults: clip-ratio 3, max-norm-ratio 10
    fed.aggregate_train(1, [message(1, update(1.0)), message(2, update(1.2)), message(3, update(0.8))])
    g1 = fed.global_arrays[W].copy()  # 1.0 everywhere; the accepted step norms' median: sqrt(12)
    arrays, _ = fed.aggregate_train(2, [message(4, update(1.0 + 5.0))])  # alone: no median of its round
    step = arrays[W].numpy() - g1
    assert np.linalg.norm(step) == pytest.approx(3.0 * np.sqrt(12), rel=1e-5)
    np.testing.assert_allclose(step / np.linalg.norm(step), np.full((4, 3), 1 / np.sqrt(12)), rtol=1e-5)
    assert fed.round_record(2).clipped == 1 and fed.round_record(2).accepted == 1


def test_a_streamed_round_screens_norms_against_recent_rounds_whatever_the_number_of_replies():
    """A collected round has no median to screen a lone reply against (it is only clipped); a streamed
    round compares it with the recent rounds' median, so a step 50 times the usual is excluded."""
    fed = strategy()
    fed.aggregate_train(1, [message(1, update(1.0)), message(2, update(1.2)), message(3, update(0.8))])
    arrays, _ = fed.aggregate_train(2, [message(4, update(1.0 + 50.0))])
    assert arrays is None and [(e.node_id, e.reason) for e in fed.round_record(2).excluded] == [(4, "norm")]
    np.testing.assert_allclose(fed.global_arrays[W], 1.0)


def test_without_clipping_the_same_reply_becomes_the_global_model():
    fed = strategy(**{"filter.clip-ratio": 0.0})
    fed.aggregate_train(1, [message(1, update(1.0)), message(2, update(1.2)), message(3, update(0.8))])
    arrays, _ = fed.aggregate_train(2, [message(4, update(6.0))])
    np.testing.assert_allclose(arrays[W].numpy(), 6.0)


def test_a_step_against_the_previous_global_step_is_rejected_when_asked():
    fed = strategy(**{"filter.min-cosine": 0.0})
    fed.aggregate_train(1, [message(1, update(1.0)), message(2, update(1.0))])  # the global stepped +1
    flipped = update(0.0)
    flipped[W] = np.full((4, 3), 1.0 - 0.5, np.float32)  # back towards where it came from
    arrays, _ = fed.aggregate_train(2, [message(1, flipped), message(2, update(1.5))])
    record = fed.round_record(2)
    assert [(e.node_id, e.reason) for e in record.excluded] == [(1, "direction")]
    np.testing.assert_allclose(arrays[W].numpy(), 1.5)
    assert record.clients[1]["server-cosine"] == pytest.approx(1.0)
