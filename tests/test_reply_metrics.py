"""Hostile and broken replies: every field validated before it weighs anything, one bad reply never ends a round.

The replies are real Flower ``Message``s through ``FedSSL.aggregate_train`` (the path the ServerApp runs),
beside unit tests of the bounds the run config implies.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from fedssl import reply
from fedssl.config import RunConfig
from server_app.reply_metrics import ReplyBounds, check_metrics, partition_of, read_metrics
from server_app.screening import BOUNDS, METRICS, NAN, RejectedUpdate
from tests.test_strategy import GLOBAL, message, strategy, update

HONEST = {k: 0.0 for k in reply.METRIC_KEYS} | {reply.NUM_EXAMPLES: 640.0, reply.STEPS: 5.0, reply.LOSS: 2.0,
                                                reply.Z_STD: 0.7, reply.RANKME: 80.0, reply.SECONDS: 1.0}


def test_bounds_follow_from_the_run_config():
    cfg = RunConfig.from_flat({"train.max-steps": 50, "train.batch-size": 128, "data.max-samples": 1000,
                               "train.local-epochs": 2})
    bounds = ReplyBounds.from_config(cfg)
    assert (bounds.max_steps, bounds.batch_size, bounds.max_examples) == (min(50, 2 * (1000 // 128)), 128, 2000)
    assert bounds.max_rankme == min(512, cfg.model.embedding_dim)
    unbounded = ReplyBounds.from_config(RunConfig.from_flat({"train.max-steps": 0, "data.max-samples": 0}))
    assert (unbounded.max_steps, unbounded.max_examples) == (0, 0)


@pytest.mark.parametrize("changes,reason", [
    ({reply.NUM_EXAMPLES: 1e12}, BOUNDS),
    ({reply.NUM_EXAMPLES: -640.0}, BOUNDS),
    ({reply.NUM_EXAMPLES: 0.0}, BOUNDS),
    ({reply.NUM_EXAMPLES: 640.5}, BOUNDS),
    ({reply.NUM_EXAMPLES: 641.0}, BOUNDS),  # more than steps x batch size (5 x 128)
    ({reply.STEPS: 51.0, reply.NUM_EXAMPLES: 51 * 128.0}, BOUNDS),  # train.max-steps is 50
    ({reply.Z_STD: 2.0}, BOUNDS),
    ({reply.Z_STD: -0.1}, BOUNDS),
    ({reply.RANKME: 1e6}, BOUNDS),
    ({reply.LOSS: -1e300}, BOUNDS),
    ({reply.SECONDS: -1.0}, BOUNDS),
    ({reply.SKIPPED: 0.5}, BOUNDS),
    ({reply.PARTITION_ID: 3.0, reply.NUM_PARTITIONS: 2.0}, BOUNDS),
    ({reply.PARTITION_ID: -2.0}, BOUNDS),
    ({reply.DEVICE_BATCH_SIZE: 129.0}, BOUNDS),  # a device picks within train.batch-size, never above
    ({reply.DEVICE_BATCH_SIZE: 31.5}, BOUNDS),
    ({reply.DEVICE_PRECISION_BITS: 8.0}, BOUNDS),
    ({reply.DEVICE_THREADS: -1.0}, BOUNDS),
    ({reply.DEVICE_MEMORY_MB: -5.0}, BOUNDS),
])
def test_out_of_bounds_metrics_are_rejected(changes, reason):
    bounds = ReplyBounds.from_config(RunConfig.from_flat({"model.embedding-dim": 128, "model.readout": "pool"}))
    check_metrics(HONEST, bounds)
    with pytest.raises(RejectedUpdate) as err:
        check_metrics({**HONEST, **changes}, bounds)
    assert err.value.reason == reason


@pytest.mark.parametrize("record,reason", [
    (None, METRICS),
    ({k: v for k, v in HONEST.items() if k != reply.LOSS}, METRICS),
    ({**HONEST, reply.LOSS: [1.0, 2.0]}, METRICS),
    ({**HONEST, reply.NUM_EXAMPLES: True}, METRICS),
    ({**HONEST, reply.LOSS: "1.0"}, METRICS),
    ({**HONEST, reply.NUM_EXAMPLES: float("nan")}, NAN),
    ({**HONEST, reply.Z_STD: float("inf")}, NAN),
    ({**HONEST, reply.NUM_EXAMPLES: 10**400}, BOUNDS),
])
def test_metrics_must_be_present_finite_scalars(record, reason):
    with pytest.raises(RejectedUpdate) as err:
        read_metrics(record)
    assert err.value.reason == reason
    assert read_metrics(HONEST) == HONEST


def test_a_partition_id_is_only_reported_when_it_is_a_sane_integer():
    assert partition_of({reply.PARTITION_ID: 3.0}) == 3.0
    for bad in (float("nan"), [1.0], 2.5, 1e300, True):
        assert partition_of({reply.PARTITION_ID: bad}) == -1.0
    assert partition_of(None) == -1.0


def _with_metrics(node: int, **changes) -> object:
    """A reply Message whose metric record is replaced key by key (lists and all)."""
    msg = message(node, update(1.0))
    values = dict(msg.content[reply.METRICS]) | {k.replace("_", "-"): v for k, v in changes.items()}
    msg.content = RecordDict({reply.ARRAYS: msg.content[reply.ARRAYS], reply.METRICS: MetricRecord(values)})
    return msg


def test_lying_and_malformed_replies_are_excluded_and_the_honest_ones_averaged():
    fed = strategy()
    counter = "backbone.bn.num_batches_tracked"
    garbage = ArrayRecord(array_dict={"backbone.w": Array(dtype="float32", shape=(4, 3), stype="numpy.ndarray",
                                                          data=b"\x00" * 48),
                                      counter: Array(GLOBAL[counter])})
    undecodable = message(9, update(1.0))
    undecodable.content = RecordDict({reply.ARRAYS: garbage, reply.METRICS: undecodable.content[reply.METRICS]})
    replies = [
        message(1, update(1.0), n=100),
        message(2, update(3.0), n=300),
        message(3, update(50.0), n=1e12),  # one huge claim would make it the global model
        message(4, update(50.0), n=1e300),  # two huge claims used to overflow the weighted sum
        message(5, update(50.0), n=-1e6),  # a negative count extrapolated, a large one raised
        _with_metrics(6, loss=[1.0, 2.0]),  # a list where a number belongs used to raise a TypeError
        _with_metrics(7, num_examples=float("nan")),
        message(8, update(2.0), n=100, steps=0),  # claims examples without steps
        undecodable,  # bytes that are not a .npy: refused by the server's .npy reader
        message(10, update(1.0, np.float64)),  # float64 where float32 is expected
    ]
    arrays, metrics = fed.aggregate_train(1, replies)
    record = fed.round_record(1)
    reasons = {e.node_id: e.reason for e in record.excluded}
    assert reasons == {3: "bounds", 4: "bounds", 5: "bounds", 6: "metrics", 7: "nan", 8: "bounds", 9: "shape",
                       10: "dtype"}
    assert "not a .npy array" in next(e.detail for e in record.excluded if e.node_id == 9)
    np.testing.assert_allclose(arrays["backbone.w"].numpy(), (100 * 1.0 + 300 * 3.0) / 400, rtol=1e-6)
    assert record.accepted == 2 and record.num_examples == 400 and metrics["accepted"] == 2
    assert len(record.clients) == 10 and reply.LOSS not in record.clients[5]  # only finite numbers are reported


def test_a_round_where_every_reply_is_excluded_keeps_the_global_model():
    fed = strategy()
    before = {k: v.copy() for k, v in fed.global_arrays.items()}
    arrays, metrics = fed.aggregate_train(1, [message(1, update(9.0), n=1e12), _with_metrics(2, loss=[1.0])])
    assert arrays is None and metrics["accepted"] == 0
    assert fed.round_record(1).accepted == 0 and np.isnan(fed.round_record(1).loss)
    for key, value in before.items():
        np.testing.assert_array_equal(fed.global_arrays[key], value)
    arrays, _ = fed.aggregate_train(2, [message(1, update(1.0)), message(2, update(3.0))])  # the next round goes on
    np.testing.assert_allclose(arrays["backbone.w"].numpy(), 2.0)
