"""The device's side of split mode (MocoSFL): forward its stem, apply the server's gradient, report its stems.

Only ``context.state`` survives between messages, so the stems, the optimiser's state and the
step counters live there; the backward message recomputes the forward pass from the same seed
(``fedssl/split/device.py``) instead of keeping a graph.
"""

from __future__ import annotations

import io
import logging
import resource

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedssl.config import RunConfig
from fedssl.data.node_images import node_images
from fedssl.split import protocol as p
from fedssl.split.device import SplitDevice, step_views
from fedssl.state import to_numpy, to_torch

log = logging.getLogger(__name__)
DROP = "split-drop"  # node config misbehave: fail every backward message after step 0 (a device that drops out)


def register(app: ClientApp) -> None:
    """Route the split-mode message types of ``app`` to the handlers below."""
    app.train(p.FORWARD)(split_forward)
    app.train(p.BACKWARD)(split_backward)
    app.query(p.SYNC)(split_sync)


def split_forward(msg: Message, context: Context) -> Message:
    cfg = RunConfig.from_flat(context.run_config)
    # 1. The stems: fresh from the server at a period's first step, else this device's own.
    if p.STEMS in msg.content.array_records:
        context.state[p.DEVICE_STATE] = msg.content[p.STEMS]
        context.state[p.DEVICE_COUNTERS] = ConfigRecord({p.STEPS: 0, p.NUM_EXAMPLES: 0})
    device = _device(cfg, context)
    # 2. Two views of a seeded batch; activations of both stems (nothing kept: backward recomputes).
    online, momentum = device.activations(_views(cfg, msg, context))
    dtype = cfg.transport_dtype
    acts = {p.ONLINE_ACTS: online, p.MOMENTUM_ACTS: momentum}
    return Message(content=RecordDict({p.ACTIVATIONS: _record(to_numpy(acts, dtype))}), reply_to=msg)


def split_backward(msg: Message, context: Context) -> Message:
    cfg = RunConfig.from_flat(context.run_config)
    config = msg.content[p.CONFIG]
    if context.node_config.get("misbehave") == DROP and int(config[p.STEP]) >= 1:
        raise RuntimeError(f"node config misbehave={DROP!r}: this device drops out at step {config[p.STEP]}")
    device = _device(cfg, context)
    optimizer = device.optimizer(cfg.train, _optimizer_state(context))
    views = _views(cfg, msg, context)
    grad = to_torch({"g": msg.content[p.GRADIENT][p.ONLINE_ACTS].numpy()})["g"] / float(config.get(p.GRAD_SCALE, 1.0))
    # Recompute the forward pass, back-propagate the server's slice, step, follow with the momentum stem.
    device.backward_step(views, grad, optimizer, float(config[p.LR]))
    context.state[p.DEVICE_STATE] = _record(to_numpy(device.transport_state()))
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    context.state[p.DEVICE_OPTIMIZER] = ConfigRecord({"torch": buffer.getvalue()})
    counters = context.state.config_records[p.DEVICE_COUNTERS]
    context.state[p.DEVICE_COUNTERS] = ConfigRecord({p.STEPS: int(counters[p.STEPS]) + 1,
                                                     p.NUM_EXAMPLES: int(counters[p.NUM_EXAMPLES]) + len(views) // 2})
    return Message(content=RecordDict({p.METRICS: MetricRecord({p.STEPS: float(counters[p.STEPS]) + 1})}),
                   reply_to=msg)


def split_sync(msg: Message, context: Context) -> Message:
    cfg = RunConfig.from_flat(context.run_config)
    counters = context.state.config_records.get(p.DEVICE_COUNTERS, ConfigRecord({p.STEPS: 0, p.NUM_EXAMPLES: 0}))
    partition_id = float(context.node_config.get("partition-id", -1))
    metrics = {
        p.NUM_EXAMPLES: float(counters[p.NUM_EXAMPLES]), p.STEPS: float(counters[p.STEPS]),
        p.PEAK_MEM_MB: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, p.PARTITION_ID: partition_id,
        p.NUM_PARTITIONS: float(context.node_config.get("num-partitions", 0)) if partition_id >= 0 else 0.0,
    }
    stems = to_numpy(_device(cfg, context).transport_state(), cfg.transport_dtype)
    return Message(content=RecordDict({p.STEMS: _record(stems), p.METRICS: MetricRecord(metrics)}), reply_to=msg)


def _device(cfg: RunConfig, context: Context) -> SplitDevice:
    """This device's stems, as kept in ``context.state``.

    Raises:
        LookupError: if the server never sent stems to this device (the reply is an error).
    """
    if p.DEVICE_STATE not in context.state.array_records:
        raise LookupError("no stems on this device yet: the first split_forward of a period carries them")
    device = SplitDevice(cfg.model, cfg.split.cut, cfg.ssl.momentum)
    device.load_transport_state(to_torch({k: v.numpy() for k, v in context.state[p.DEVICE_STATE].items()}))
    return device


def _views(cfg: RunConfig, msg: Message, context: Context) -> torch.Tensor:
    seed = int(msg.content[p.CONFIG][p.SEED]) * 1009 + context.node_id % 1009  # devices draw different batches
    return step_views(node_images(cfg, context.node_config), cfg.split.local_batch, cfg.model, cfg.train, seed)


def _optimizer_state(context: Context) -> dict | None:
    record = context.state.config_records.get(p.DEVICE_OPTIMIZER)
    return None if record is None else torch.load(io.BytesIO(record["torch"]), map_location="cpu", weights_only=True)


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()})
