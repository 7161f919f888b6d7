"""ClientApp: receive the global backbone, train it with SSL on local data, send back only the backbone."""

from __future__ import annotations

import logging

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client_app.data import node_images
from fedssl import reply
from fedssl.config import RunConfig
from fedssl.ssl import build_ssl_model
from fedssl.state import backbone_arrays, load_backbone, to_numpy, to_torch
from fedssl.train import train_local

log = logging.getLogger(__name__)
app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = RunConfig.from_flat(context.run_config)
    server_round = int(msg.content[reply.CONFIG].get("server-round", 0))
    torch.manual_seed(cfg.seed * 100_003 + server_round * 1009 + context.node_id % 1000)

    # 1. The model: global backbone from the server, heads/targets/queues kept on this device.
    model = build_ssl_model(cfg.ssl, cfg.model)
    if reply.LOCAL_STATE in context.state:
        local = context.state[reply.LOCAL_STATE]
        model.load_state_dict(to_torch({k: v.numpy() for k, v in local.items()}), strict=False)
    load_backbone(model, {k: v.numpy() for k, v in msg.content[reply.ARRAYS].items()})

    # 2. Local SSL training on this device's unlabeled images, then the collapse check.
    images = node_images(cfg, context.node_config)
    partition_id = float(context.node_config.get("partition-id", -1))
    if len(images) < 2:
        metrics = {k: 0.0 for k in reply.METRIC_KEYS} | {reply.SKIPPED: 1.0, reply.PARTITION_ID: partition_id}
        log.warning("skipping round %d: only %d image(s) on this device", server_round, len(images))
    else:
        result = train_local(model, images, cfg.model, cfg.train, seed=cfg.seed + server_round,
                             max_samples=cfg.data.max_samples)
        metrics = {
            reply.NUM_EXAMPLES: float(result.num_examples), reply.LOSS: result.loss, reply.Z_STD: result.z_std,
            reply.RANKME: result.rankme, reply.STEPS: float(result.steps), reply.SECONDS: result.seconds,
            reply.EXAMPLES_PER_S: result.examples_per_s, reply.PEAK_MEM_MB: result.peak_mem_mb,
            reply.SKIPPED: 0.0, reply.PARTITION_ID: partition_id,
        }

    # 3. Keep the local parts on the device; reply with the backbone only.
    context.state[reply.LOCAL_STATE] = _array_record(to_numpy(model.local_state()))
    content = RecordDict({
        reply.ARRAYS: _array_record(backbone_arrays(model, cfg.transport_dtype)),
        reply.METRICS: MetricRecord(metrics),
    })
    return Message(content=content, reply_to=msg)


def _array_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()})
