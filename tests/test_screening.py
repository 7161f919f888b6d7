"""Server-side screening of client updates: structure, values, norms, collapse."""

from dataclasses import dataclass

import numpy as np
import pytest
from flwr.app import Array

from fedssl import reply
from fedssl.config import FilterConfig
from server_app.screening import (
    BOUNDS,
    COLLAPSE,
    DTYPE,
    EXTRA_KEYS,
    MISSING_KEYS,
    NAN,
    NORM,
    SHAPE,
    DecodedOnAccess,
    RejectedUpdate,
    check_collapse,
    check_metadata,
    check_norms,
    check_structure,
)

REF = {"backbone.w": np.zeros((2, 3), np.float32), "backbone.n": np.array(0, np.int64)}


def _reason(arrays):
    with pytest.raises(RejectedUpdate) as err:
        check_structure(arrays, REF)
    return err.value.reason


def test_a_well_formed_update_passes():
    check_structure({"backbone.w": np.ones((2, 3), np.float32), "backbone.n": np.array(4, np.int64)}, REF)


def _meta_reason(arrays, float_dtype="float32"):
    with pytest.raises(RejectedUpdate) as err:
        check_metadata({k: Array(v) for k, v in arrays.items()}, REF, float_dtype)
    return err.value.reason


def test_transport_dtype_is_exact_float16_only_where_the_run_says_so():
    half = {"backbone.w": np.ones((2, 3), np.float16), "backbone.n": np.array(4, np.int64)}
    full = {**half, "backbone.w": np.ones((2, 3), np.float32)}
    check_metadata({k: Array(v) for k, v in half.items()}, REF, "float16")
    check_metadata({k: Array(v) for k, v in full.items()}, REF, "float32")
    assert _meta_reason(half) == DTYPE and _meta_reason(full, "float16") == DTYPE
    assert _meta_reason({**full, "backbone.w": np.ones((2, 3), np.float64)}) == DTYPE
    assert _meta_reason({**full, "backbone.n": np.array(4, np.int32)}) == DTYPE


class _Lying:
    """An Array whose metadata is right and whose bytes are not (counts how often it is decoded)."""

    def __init__(self, meta: Array, data: bytes) -> None:
        self.dtype, self.shape, self.stype, self.data, self.decoded = meta.dtype, meta.shape, meta.stype, data, 0

    def numpy(self):
        self.decoded += 1
        return Array(dtype=self.dtype, shape=self.shape, stype=self.stype, data=self.data).numpy()


def test_shape_and_size_are_checked_from_metadata_before_any_byte_is_decoded():
    big = _Lying(Array(np.ones((2, 3), np.float32)), Array(np.ones((1000, 1000), np.float32)).data)
    wrong_shape = _Lying(Array(np.ones((3, 2), np.float32)), Array(np.ones((3, 2), np.float32)).data)
    for bad, reason in ((big, SHAPE), (wrong_shape, SHAPE)):
        with pytest.raises(RejectedUpdate) as err:
            check_metadata({"backbone.w": bad, "backbone.n": Array(np.array(4, np.int64))}, REF)
        assert err.value.reason == reason and bad.decoded == 0
    # metadata that passes but bytes of another shape: caught when decoded, before any arithmetic
    liar = _Lying(Array(np.ones((2, 3), np.float32)), Array(np.ones(6, np.float32)).data)
    record = {"backbone.w": liar, "backbone.n": Array(np.array(4, np.int64))}
    check_metadata(record, REF)
    with pytest.raises(RejectedUpdate) as err:
        check_structure(DecodedOnAccess(record), REF)
    assert err.value.reason == SHAPE


def test_integer_buffers_are_non_negative_and_advance_at_most_the_round_allows():
    ok = {"backbone.w": np.ones((2, 3), np.float32), "backbone.n": np.array(200, np.int64)}
    check_structure(ok, REF, max_int_advance=200)
    for value in (-1, 201):
        with pytest.raises(RejectedUpdate) as err:
            check_structure({**ok, "backbone.n": np.array(value, np.int64)}, REF, max_int_advance=200)
        assert err.value.reason == BOUNDS


@pytest.mark.parametrize("arrays,reason", [
    ({"backbone.w": np.ones((2, 3), np.float32)}, MISSING_KEYS),
    ({**REF, "projector.w": np.ones(2, np.float32)}, EXTRA_KEYS),
    ({**REF, "backbone.w": np.ones((3, 2), np.float32)}, SHAPE),
    ({**REF, "backbone.w": np.ones((2, 3), np.int32)}, DTYPE),
    ({**REF, "backbone.w": np.ones((2, 3), np.float64)}, DTYPE),
    ({**REF, "backbone.n": np.array(0, np.int32)}, DTYPE),
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


def test_collapse_filter_uses_both_thresholds_and_can_be_switched_off():
    cfg = FilterConfig(min_z_std=0.1, min_rankme_ratio=0.05)
    check_collapse({reply.Z_STD: 0.8, reply.RANKME: 40.0}, cfg, embedding_dim=128)
    for metrics in ({reply.Z_STD: 0.01, reply.RANKME: 40.0}, {reply.Z_STD: 0.8, reply.RANKME: 1.0}):
        with pytest.raises(RejectedUpdate) as err:
            check_collapse(metrics, cfg, embedding_dim=128)
        assert err.value.reason == COLLAPSE
    check_collapse({reply.Z_STD: 0.0, reply.RANKME: 1.0}, FilterConfig(enabled=False), embedding_dim=128)


@dataclass
class Candidate:
    norm: float


def test_a_streamed_norm_screen_holds_the_first_five_of_a_round_without_history():
    from server_app.screening import NormReference

    reference = NormReference(max_ratio=10.0, history_median=None)
    first = [Candidate(1e4), Candidate(1e4), Candidate(1.0), Candidate(2.0), Candidate(3.0)]  # two fast colluders
    assert [reference.admit(c) for c in first[:4]] == [[], [], [], []]
    assert reference.admit(first[4]) == first  # median known: all five judged against it
    assert reference.median == 3.0 and reference.admit(Candidate(5.0)) == [Candidate(5.0)]  # then streamed
    with pytest.raises(RejectedUpdate, match="norm"):
        reference.check(1e4)
    reference.check(29.0)
    assert reference.flush() == []


def test_a_streamed_norm_screen_uses_recent_rounds_or_the_held_replies_own_median():
    from server_app.screening import NormReference

    with_history = NormReference(max_ratio=10.0, history_median=0.5)
    assert with_history.admit(Candidate(100.0)) == [Candidate(100.0)]
    with pytest.raises(RejectedUpdate, match="norm"):
        with_history.check(100.0)
    three = NormReference(max_ratio=10.0, history_median=None)  # a small round: as if collected
    assert [three.admit(Candidate(n)) for n in (1.0, 1e6, 2.0)] == [[], [], []]
    assert three.flush() == [Candidate(1.0), Candidate(1e6), Candidate(2.0)] and three.median == 2.0
    with pytest.raises(RejectedUpdate, match="norm"):
        three.check(1e6)
    two = NormReference(max_ratio=10.0, history_median=None)
    assert two.admit(Candidate(1.0)) == [] and two.admit(Candidate(1e6)) == []
    assert two.flush() == [Candidate(1.0), Candidate(1e6)]
    two.check(1e6)  # a median of two says nothing: no norm screen, as in a collected round
    assert two.warmup_norms == [1.0, 1e6]


@pytest.mark.parametrize("array", [np.arange(12, dtype=np.float32).reshape(3, 4),
                                   np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
                                   np.array(7, np.int64), np.zeros((0, 5), np.float16)])
def test_a_reply_array_is_read_as_a_view_of_its_bytes_equal_to_what_numpy_decodes(array):
    from server_app.screening import npy_view

    data = Array(array).data
    view = npy_view(data)
    np.testing.assert_array_equal(view, array)
    assert view.dtype == array.dtype and view.shape == array.shape and not view.flags.writeable


@pytest.mark.parametrize("data", [b"not a npy at all", Array(np.ones(4, np.float32)).data[:-4],
                                  Array(np.ones(4, np.float32)).data + b"\x00" * 4])
def test_bytes_that_are_not_exactly_one_npy_array_are_refused(data):
    from server_app.screening import npy_view

    with pytest.raises(RejectedUpdate) as rejected:
        npy_view(data)
    assert rejected.value.reason == "shape"


def test_an_object_array_is_refused_without_unpickling():
    import io

    from server_app.screening import npy_view

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RejectedUpdate, match="object"):
        npy_view(buffer.getvalue())


def test_a_remembered_header_still_reads_each_reply_s_own_values_and_length():
    """Parsed headers are cached by their bytes: replies sharing a header keep their own data, and a
    reply whose length disagrees with a remembered header is still refused."""
    from server_app.screening import npy_view

    first, second = Array(np.full((3, 4), 1.0, np.float32)).data, Array(np.full((3, 4), 2.0, np.float32)).data
    assert first[:first.index(b"\n") + 1] == second[:second.index(b"\n") + 1]  # the same header bytes
    np.testing.assert_array_equal(npy_view(first), 1.0)
    np.testing.assert_array_equal(npy_view(second), 2.0)
    with pytest.raises(RejectedUpdate, match="bytes of float32"):
        npy_view(second[:-4])
    with pytest.raises(RejectedUpdate, match="not a .npy array"):
        npy_view(second[:8] + b"\xff\xff" + second[10:])  # a header length past the end of the bytes
