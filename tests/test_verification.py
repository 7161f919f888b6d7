"""The server measures collapse itself: real ClientApp rounds (honest and lying) through FedSSL.aggregate_train."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict

from client_app.app import train_round
from client_app.misbehave import INFLATED_EXAMPLES
from fedssl import reply
from fedssl.config import RunConfig
from fedssl.data.fashion_mnist import load_fashion_mnist
from fedssl.ssl import build_ssl_model
from fedssl.state import backbone_arrays
from server_app.screening import CLAIMS, COLLAPSE, RejectedUpdate
from server_app.strategy import FedSSL
from server_app.verification import CollapseVerifier, claim_ratio
from tests.test_strategy import message

SMALL = {"data.max-samples": 64, "train.batch-size": 32, "filter.probe-size": 128}


@pytest.fixture(scope="module")
def cfg():
    return RunConfig.from_flat(SMALL)


@pytest.fixture(scope="module")
def verifier(cfg):
    return CollapseVerifier.from_gallery(cfg, load_fashion_mnist("train")[0][:2000])


@pytest.fixture(scope="module")
def start(cfg):
    return backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))


def device_reply(start, node: int, mode: str = "") -> Message:
    """A real ClientApp round on partition ``node``, wrapped as the reply Message the server receives."""
    context = Context(run_id=1, node_id=node, state=RecordDict(), run_config=RunConfig.from_flat(SMALL).to_flat(),
                      node_config={"partition-id": node, "num-partitions": 10, **({"misbehave": mode} if mode else {})})
    content = train_round(ArrayRecord(array_dict={k: Array(v) for k, v in start.items()}), 1, context)
    arrays = {k: v.numpy() for k, v in content[reply.ARRAYS].items()}
    return message(node, arrays, **{k.replace("-", "_"): v for k, v in content[reply.METRICS].items()})


def test_claim_ratio_is_symmetric_and_floored():
    assert claim_ratio(0.5, 0.25) == claim_ratio(0.25, 0.5) == 2.0
    assert claim_ratio(0.0, 0.0) == 1.0 and claim_ratio(0.9, 0.0) == pytest.approx(900.0)


def test_the_probe_batch_is_fixed_and_switchable(cfg):
    gallery = load_fashion_mnist("train")[0][:2000]
    a, b = CollapseVerifier.from_gallery(cfg, gallery), CollapseVerifier.from_gallery(cfg, gallery)
    assert len(a.images) == 128 and np.array_equal(a.images, b.images)
    off = RunConfig.from_flat({**SMALL, "filter.probe-size": 0})
    assert CollapseVerifier.from_gallery(off, gallery) is None
    with pytest.raises(ValueError, match="probe-size"):
        RunConfig.from_flat({**SMALL, "filter.probe-size": 1})


def test_lying_devices_are_caught_and_the_honest_ones_averaged(cfg, verifier, start):
    replies = [device_reply(start, 1), device_reply(start, 2), device_reply(start, 3, "pretend"),
               device_reply(start, 4, "inflate")]
    pretend = dict(replies[2].content[reply.METRICS])
    assert pretend[reply.Z_STD] > 0.3  # it claims the figures its honest model had...
    fed = FedSSL(cfg, dict(start), verifier=verifier)
    arrays, _ = fed.aggregate_train(1, replies)
    record = fed.round_record(1)
    reasons = {e.node_id: e.reason for e in record.excluded}
    assert reasons == {3: COLLAPSE, 4: "bounds"}  # ...but the server measures its encoder collapsed
    assert str(INFLATED_EXAMPLES) in str(1e12) and "num-examples" in record.excluded[0].detail + \
        record.excluded[-1].detail
    honest = [{k: v.numpy() for k, v in m.content[reply.ARRAYS].items()} for m in replies[:2]]
    key = "backbone.features.0.0.weight"
    np.testing.assert_allclose(arrays[key].numpy(), (honest[0][key] + honest[1][key]) / 2, rtol=1e-5, atol=1e-7)
    for client in record.clients[:2]:  # the server's own figures are recorded beside the reported ones
        assert client["server-z-std"] > cfg.filter.min_z_std
        assert claim_ratio(client[reply.Z_STD], client["server-z-std"]) <= cfg.filter.claim_tolerance


def test_reported_figures_that_disagree_with_the_measurement_are_rejected(cfg, verifier, start):
    honest = device_reply(start, 5)
    arrays = {k: v.numpy() for k, v in honest.content[reply.ARRAYS].items()}
    metrics = dict(honest.content[reply.METRICS])
    measured = verifier.check(arrays, metrics)  # honest: passes
    dim = cfg.model.embedding_dim
    high = measured.rankme / min(len(verifier.images), dim) * min(512, dim) * 2 * cfg.filter.claim_tolerance
    with pytest.raises(RejectedUpdate) as err:
        verifier.check(arrays, {**metrics, reply.RANKME: high})
    assert err.value.reason == CLAIMS and "rankme" in err.value.detail
    # Under-claiming (a device with a few samples measures a lower RankMe) is not a lie that matters.
    low = measured.rankme / min(len(verifier.images), dim) * min(512, dim) / (2 * cfg.filter.claim_tolerance)
    assert verifier.check(arrays, {**metrics, reply.RANKME: low}) == measured
