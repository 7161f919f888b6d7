"""FedSSL.aggregate_train on real Flower reply Messages: screening reasons and the aggregate itself.

The federation tests drive the same code through real SuperNodes; here the replies are built
in process so every kind of bad reply can be placed in one round and the arithmetic checked exactly.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict

from fedssl import reply
from fedssl.config import RunConfig
from server_app.screening import DecodedOnAccess
from server_app.strategy import FedSSL

GLOBAL = {"backbone.w": np.zeros((4, 3), np.float32), "backbone.bn.num_batches_tracked": np.array(5, np.int64)}


def message(node: int, arrays: dict[str, np.ndarray], n: float = 100.0, **metrics: float) -> Message:
    values = {k: 0.0 for k in reply.METRIC_KEYS} | {reply.NUM_EXAMPLES: n, reply.LOSS: 1.0, reply.Z_STD: 0.8,
                                                    reply.RANKME: 100.0, reply.PARTITION_ID: float(node),
                                                    reply.STEPS: 10.0}
    values |= {k.replace("_", "-"): v for k, v in metrics.items()}
    content = RecordDict({reply.ARRAYS: ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()}),
                          reply.METRICS: MetricRecord(values)})
    metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                        reply_to_message_id=f"i{node}", group_id="1", created_at=time.time(), ttl=3600.0,
                        message_type="train")
    return Message(content=content, metadata=metadata)


def update(value: float, dtype=np.float32, steps: int = 7) -> dict[str, np.ndarray]:
    return {"backbone.w": np.full((4, 3), value, dtype), "backbone.bn.num_batches_tracked": np.array(steps, np.int64)}


def strategy(**flat) -> FedSSL:
    return FedSSL(RunConfig.from_flat({"model.embedding-dim": 128, "model.readout": "pool", **flat}), dict(GLOBAL))


def test_bad_replies_are_excluded_with_reasons_and_the_rest_averaged_by_examples():
    fed = strategy()
    nan = update(1.0)
    nan["backbone.w"][0, 0] = np.nan
    replies = [
        message(1, update(1.0), n=100),
        message(2, update(2.0, steps=9), n=300),
        message(3, update(1.5), n=100),
        message(4, nan),
        message(5, update(1.0), z_std=0.01),  # collapsed embeddings
        message(6, update(1e4)),  # a step 10^4 times the others
        message(7, {"backbone.w": np.ones((3, 4), np.float32)}),
    ]
    arrays, metrics = fed.aggregate_train(1, replies)
    record = fed.round_record(1)
    reasons = {e.node_id: e.reason for e in record.excluded}
    assert reasons == {4: "nan", 5: "collapse", 6: "norm", 7: "missing-keys"}
    got = arrays["backbone.w"].numpy()
    np.testing.assert_allclose(got, np.full((4, 3), (100 * 1.0 + 300 * 2.0 + 100 * 1.5) / 500), rtol=1e-6)
    assert got.dtype == np.float32
    assert int(arrays["backbone.bn.num_batches_tracked"].numpy()) == 9  # integer buffers: the largest
    assert metrics["accepted"] == 3 and record.accepted == 3 and record.num_examples == 500
    assert (record.replied, record.failed) == (7, 0) and len(record.clients) == 7
    np.testing.assert_allclose(fed.global_arrays["backbone.w"], got)


@pytest.mark.parametrize("rule", ["fedavg", "fairavg", "loss", "fedvssl", "ldawa", "fedmedian", "trimmedavg",
                                  "krum"])
def test_every_rule_aggregates_replies_decoded_on_access(rule):
    """The rules read lazily decoded replies (float16 among them) and agree with the same rule on plain dicts."""
    from server_app.aggregation import build_rule

    fed = strategy(**{"aggregation.rule": rule})
    rng = np.random.default_rng(0)
    plain = [{"backbone.w": rng.normal(size=(4, 3)).astype(np.float32),
              "backbone.bn.num_batches_tracked": np.array(k, np.int64)} for k in range(5)]
    arrays, _ = fed.aggregate_train(1, [message(k + 1, u, n=50.0 * (k + 1)) for k, u in enumerate(plain)])
    assert fed.round_record(1).accepted == 5
    expected = build_rule(fed.cfg.aggregation)(plain, [50.0 * (k + 1) for k in range(5)], [1.0] * 5, GLOBAL)
    np.testing.assert_allclose(arrays["backbone.w"].numpy(), expected["backbone.w"], rtol=1e-5, atol=1e-6)
    assert int(arrays["backbone.bn.num_batches_tracked"].numpy()) == 4  # the largest counter, whatever the rule


def test_half_precision_transport_is_widened_and_float32_refused_when_the_run_sends_float16():
    fed = strategy(**{"transport-dtype": "float16"})
    arrays, _ = fed.aggregate_train(1, [message(1, update(1.0, np.float16), n=100), message(2, update(2.0), n=100),
                                        message(3, update(3.0, np.float16), n=300)])
    assert {e.node_id: e.reason for e in fed.round_record(1).excluded} == {2: "dtype"}
    np.testing.assert_allclose(arrays["backbone.w"].numpy(), (100 * 1.0 + 300 * 3.0) / 400, rtol=1e-6)
    assert arrays["backbone.w"].numpy().dtype == np.float32


def test_decoded_on_access_widens_half_precision_and_keeps_the_keys():
    record = ArrayRecord(array_dict={"a": Array(np.arange(3, dtype=np.float16)), "b": Array(np.arange(2))})
    view = DecodedOnAccess(record)
    assert list(view) == ["a", "b"] and len(view) == 2
    assert view["a"].dtype == np.float32 and view["b"].dtype == np.arange(2).dtype
    np.testing.assert_array_equal(view["a"], [0, 1, 2])


def test_the_round_record_belongs_to_the_round_that_was_aggregated():
    fed = FedSSL(RunConfig.from_flat({}), dict(GLOBAL), round_offset=4)  # a run resumed after round 4
    with pytest.raises(LookupError):
        fed.round_record(1)  # nothing aggregated yet
    fed.aggregate_train(1, [message(1, update(1.0)), message(2, update(2.0))])
    assert fed.round_record(1).round == 5
    with pytest.raises(LookupError):
        fed.round_record(2)
