"""Split mode's messages on real Flower records: what each reply carries, and the screened stem average."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict

from client_app.app import app
from fedssl.config import RunConfig
from fedssl.split import protocol as p
from fedssl.split.build import build_split
from fedssl.split.server import DeviceActivations
from server_app.aggregation import build_rule
from server_app.split_sync import average_stems

RUN = {"mode": "split", "ssl.method": "moco", "split.local-batch": 4, "split.queue-size": 32}


def _context(node_id: int, partition: int) -> Context:
    return Context(run_id=1, node_id=node_id, node_config={"partition-id": partition, "num-partitions": 4},
                   state=RecordDict(), run_config=RunConfig.from_flat(RUN).to_flat())


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(array_dict={k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _send(ctx: Context, message_type: str, content: dict) -> Message:
    metadata = Metadata(run_id=1, message_id=f"m-{ctx.node_id}-{message_type}", src_node_id=0,
                        dst_node_id=ctx.node_id, reply_to_message_id="", group_id="1", created_at=time.time(),
                        ttl=3600.0, message_type=message_type)  # as the SuperLink delivers it
    return app(Message(content=RecordDict(content), metadata=metadata), ctx)


def _one_step(contexts, stems, server, step=0):
    config = ConfigRecord({p.STEP: step, p.SEED: 11 + step, p.LR: 0.01})
    replies = {c.node_id: _send(c, f"train.{p.FORWARD}", {p.CONFIG: config, p.STEMS: _record(stems)})
               for c in contexts}
    batches = []
    for node, r in replies.items():
        acts = r.content[p.ACTIVATIONS]
        batches.append(DeviceActivations(node, torch.from_numpy(acts[p.ONLINE_ACTS].numpy()),
                                         torch.from_numpy(acts[p.MOMENTUM_ACTS].numpy())))
    result = server.step(batches, lr=0.01)
    backward = {c.node_id: _send(c, f"train.{p.BACKWARD}", {
        p.CONFIG: config, p.GRADIENT: _record({p.ONLINE_ACTS: result.gradients[c.node_id].numpy()})})
        for c in contexts}
    return replies, backward


def test_replies_carry_only_activations_metrics_and_the_stems():
    cfg = RunConfig.from_flat(RUN)
    stems, server = build_split(cfg)
    contexts = [_context(100 + i, i) for i in range(2)]
    forward, backward = _one_step(contexts, stems, server)
    for r in forward.values():  # activations of both stems for two views of 4 images, nothing else
        assert set(r.content.keys()) == {p.ACTIVATIONS}
        acts = r.content[p.ACTIVATIONS]
        assert set(acts.keys()) == {p.ONLINE_ACTS, p.MOMENTUM_ACTS}
        assert acts[p.ONLINE_ACTS].numpy().shape == (8, 32, 14, 14)
    for r in backward.values():
        assert set(r.content.keys()) == {p.METRICS} and not r.content.array_records
    syncs = [_send(c, f"query.{p.SYNC}", {p.CONFIG: ConfigRecord({p.STEP: 1})}) for c in contexts]
    for r in syncs:  # the client-side model: exactly the stems' keys
        assert set(r.content.keys()) == {p.STEMS, p.METRICS}
        assert set(r.content[p.STEMS].keys()) == set(stems)
        assert set(r.content[p.METRICS].keys()) == set(p.SYNC_METRIC_KEYS)
        assert r.content[p.METRICS][p.NUM_EXAMPLES] == 4.0 and r.content[p.METRICS][p.STEPS] == 1.0
    result = average_stems(syncs, stems, build_rule(cfg.aggregation), max_norm_ratio=10.0)
    assert result.accepted == 2 and not result.excluded
    trained = [{k: v.numpy() for k, v in r.content[p.STEMS].items()} for r in syncs]
    key = "online.features.0.0.weight"
    np.testing.assert_allclose(result.stems[key], (trained[0][key] + trained[1][key]) / 2, rtol=1e-6)
    assert not np.allclose(result.stems[key], stems[key])  # the devices did step


def test_the_stem_average_screens_like_full_mode_updates():
    cfg = RunConfig.from_flat(RUN)
    stems, server = build_split(cfg)
    contexts = [_context(200 + i, i) for i in range(4)]
    _one_step(contexts, stems, server)
    syncs = [_send(c, f"query.{p.SYNC}", {p.CONFIG: ConfigRecord({p.STEP: 1})}) for c in contexts]
    bad = {k: v.numpy().copy() for k, v in syncs[3].content[p.STEMS].items()}
    bad["online.features.0.0.weight"][0, 0, 0, 0] = np.nan
    syncs[3].content[p.STEMS] = _record(bad)
    del syncs[2].content[p.STEMS]["momentum.features.0.0.weight"]
    result = average_stems(syncs, stems, build_rule(cfg.aggregation), max_norm_ratio=10.0)
    reasons = {int(e.partition_id): e.reason for e in result.excluded}
    assert reasons == {2: "missing-keys", 3: "nan"} and result.accepted == 2
    assert all(np.isfinite(v).all() for v in result.stems.values() if v.dtype.kind == "f")


def test_a_device_without_stems_answers_with_an_error_not_a_guess():
    ctx = _context(300, 0)
    config = ConfigRecord({p.STEP: 0, p.SEED: 1, p.LR: 0.01})
    with pytest.raises(LookupError, match="no stems"):
        _send(ctx, f"train.{p.FORWARD}", {p.CONFIG: config})
