"""Server-side screening of client updates: structure, values, norms, collapse."""

import numpy as np
import pytest

from fedssl import reply
from fedssl.config import FilterConfig
from server_app.screening import (
    COLLAPSE,
    DTYPE,
    EXTRA_KEYS,
    MISSING_KEYS,
    NAN,
    NORM,
    SHAPE,
    RejectedUpdate,
    check_collapse,
    check_metrics,
    check_norms,
    check_structure,
)

REF = {"backbone.w": np.zeros((2, 3), np.float32), "backbone.n": np.array(0, np.int64)}


def _reason(arrays):
    with pytest.raises(RejectedUpdate) as err:
        check_structure(arrays, REF)
    return err.value.reason


def test_a_well_formed_update_passes_also_in_half_precision():
    check_structure({"backbone.w": np.ones((2, 3), np.float16), "backbone.n": np.array(4, np.int64)}, REF)


@pytest.mark.parametrize("arrays,reason", [
    ({"backbone.w": np.ones((2, 3), np.float32)}, MISSING_KEYS),
    ({**REF, "projector.w": np.ones(2, np.float32)}, EXTRA_KEYS),
    ({**REF, "backbone.w": np.ones((3, 2), np.float32)}, SHAPE),
    ({**REF, "backbone.w": np.ones((2, 3), np.int32)}, DTYPE),
    ({**REF, "backbone.n": np.array(0.5, np.float32)}, DTYPE),
    ({**REF, "backbone.w": np.array([[0, np.nan, 0], [0, 0, 0]], np.float32)}, NAN),
    ({**REF, "backbone.w": np.array([[0, np.inf, 0], [0, 0, 0]], np.float32)}, NAN),
])
def test_malformed_updates_are_rejected_with_a_reason(arrays, reason):
    assert _reason(arrays) == reason


def test_norm_outliers_against_the_round_median():
    assert check_structure({"backbone.w": np.full((2, 3), 2.0, np.float32), "backbone.n": REF["backbone.n"]},
                           REF) == pytest.approx(np.sqrt(6 * 4))
    rejected = check_norms({1: 1.0, 2: 1.2, 3: 0.9, 4: 100.0}, max_ratio=10)
    assert list(rejected) == [4] and rejected[4].reason == NORM
    assert check_norms({1: 1.0, 2: 100.0}, max_ratio=10) == {}  # two replies: no majority to trust


def test_metrics_must_all_be_present_and_finite():
    good = {k: 1.0 for k in reply.METRIC_KEYS}
    check_metrics(good)
    with pytest.raises(RejectedUpdate):
        check_metrics({k: v for k, v in good.items() if k != reply.LOSS})
    with pytest.raises(RejectedUpdate) as err:
        check_metrics({**good, reply.LOSS: float("nan")})
    assert err.value.reason == NAN


def test_collapse_filter_uses_both_thresholds_and_can_be_switched_off():
    cfg = FilterConfig(min_z_std=0.1, min_rankme_ratio=0.05)
    check_collapse({reply.Z_STD: 0.8, reply.RANKME: 40.0}, cfg, embedding_dim=128)
    for metrics in ({reply.Z_STD: 0.01, reply.RANKME: 40.0}, {reply.Z_STD: 0.8, reply.RANKME: 1.0}):
        with pytest.raises(RejectedUpdate) as err:
            check_collapse(metrics, cfg, embedding_dim=128)
        assert err.value.reason == COLLAPSE
    check_collapse({reply.Z_STD: 0.0, reply.RANKME: 1.0}, FilterConfig(enabled=False), embedding_dim=128)
