"""ClientApp: receive the global backbone, train it with SSL on local data, send back only the backbone."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client_app.data import node_data
from client_app.misbehave import LYING, corrupt, falsify
from client_app.split import register as register_split
from fedssl import reply
from fedssl.config import RunConfig
from fedssl.device_merge import fedema, fedema_scale, fedu
from fedssl.device_profile import measure_device
from fedssl.local_settings import PRECISION_BITS, choose_local_settings, measure_footprint
from fedssl.modality import MODALITIES
from fedssl.ssl import build_ssl_model
from fedssl.ssl.base import SSLModel
from fedssl.state import load_heads, shared_arrays, strip_prefix, to_numpy, to_torch
from fedssl.train import RoundPosition, collapse_check, sample_views, train_local

log = logging.getLogger(__name__)
app = ClientApp()
register_split(app)  # mode = "split": train.split_forward, train.split_backward, query.split_sync
LOCAL_BACKBONE = "fedssl-local-backbone"  # this device's backbone after its last round (FedU/FedEMA)
MERGE_STATE = "fedssl-merge"
PhaseTimer = Callable[[str], AbstractContextManager[object]]  # name -> a context that times the phase
OPTIMIZER_STATE = "fedssl-optimizer"  # Adam's moments, kept between rounds (train.keep-optimizer-state)


@app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content[reply.CONFIG]
    server_round = int(config.get("server-round", 0))
    num_rounds = int(config.get("num-rounds", 0))
    return Message(content=train_round(msg.content[reply.ARRAYS], server_round, context, num_rounds),
                   reply_to=msg)


def untimed(name: str) -> AbstractContextManager[object]:
    """The default :data:`PhaseTimer`: times nothing."""
    return nullcontext()


def train_round(global_arrays: ArrayRecord, server_round: int, context: Context, num_rounds: int = 0, *,
                timer: PhaseTimer = untimed) -> RecordDict:
    """One round on this device; returns the reply's content (backbone arrays and metrics).

    ``timer(name)`` wraps the phases ``train_local`` and ``collapse_check`` (a benchmark's clock).
    """
    cfg = RunConfig.from_flat(context.run_config)
    modality = MODALITIES.get(cfg.data.modality)
    position = RoundPosition(max(server_round, 1), max(num_rounds or cfg.num_rounds, server_round, 1))
    torch.manual_seed(cfg.seed * 100_003 + server_round * 1009 + context.node_id % 1000)
    partition_id = float(context.node_config.get("partition-id", -1))
    num_partitions = float(context.node_config.get("num-partitions", 0)) if partition_id >= 0 else 0.0

    # 1. The model: heads/targets/queues kept on this device, the backbone from the server
    #    (merged with this device's own under FedU/FedEMA).
    model = build_ssl_model(cfg.ssl, cfg.model, backbone=modality.build_backbone(cfg))
    if reply.LOCAL_STATE in context.state:
        model.load_state_dict(_tensors(context.state[reply.LOCAL_STATE]), strict=False)
    global_backbone = strip_prefix(_tensors(global_arrays))
    merge_metrics = _load_backbone(model, global_backbone, cfg, context)
    if cfg.transport_scope == "model":  # the heads travel too: start from the global ones
        load_heads(model, _tensors(global_arrays))

    # 2. Local SSL training on this device's unlabeled images (or audio clips: data.modality).
    images = node_data(cfg, context.node_config)
    if len(images) < 2:
        log.warning("skipping round %d: only %d image(s) on this device", server_round, len(images))
        metrics = {k: 0.0 for k in reply.METRIC_KEYS} | {reply.SKIPPED: 1.0, reply.PARTITION_ID: partition_id,
                                                       reply.NUM_PARTITIONS: num_partitions}
    else:
        # The device picks its batch size, precision, steps and threads within the run's limits.
        profile = measure_device(context.node_config)
        device = _torch_device(profile.accelerator)
        sample = sample_views(images, cfg.model, cfg.train, views=modality.views(cfg))
        settings = choose_local_settings(profile, cfg, lambda precision: measure_footprint(
            model, sample, cfg.train.optimizer, precision, device))
        torch.set_num_threads(settings.threads)
        train_cfg = replace(cfg.train, batch_size=settings.batch_size, max_steps=settings.max_steps)
        with timer("train_local"):
            result = train_local(model, images, cfg.model, train_cfg, seed=cfg.seed + server_round,
                                 max_samples=cfg.data.max_samples, position=position,
                                 optimizer_state=_optimizer_state(context) if cfg.train.keep_optimizer_state else None,
                                 views=modality.views(cfg), precision=settings.precision,
                                 device=device)
        if cfg.train.keep_optimizer_state:
            _keep_optimizer_state(context, result.optimizer_state)
        context.state[LOCAL_BACKBONE] = _record(to_numpy(model.backbone.state_dict()))
        # 3. Test and benchmark switch: corrupt what is sent, as a broken (or lying) device would.
        mode = str(context.node_config.get("misbehave", ""))
        def check() -> tuple[float, float]:
            return collapse_check(model.backbone, images, cfg.model, seed=cfg.seed,
                                  embed_fn=lambda backbone, x: modality.embed(backbone, x, cfg))

        honest = check() if mode in LYING else (0.0, 0.0)
        corrupt(model.backbone, mode)
        # 4. The collapse check on this device's own images, reported with the update.
        with timer("collapse_check"):
            z_std, rankme = check()
        metrics = {
            reply.NUM_EXAMPLES: float(result.num_examples), reply.LOSS: result.loss, reply.Z_STD: z_std,
            reply.RANKME: rankme, reply.STEPS: float(result.steps), reply.SECONDS: result.seconds,
            reply.EXAMPLES_PER_S: result.examples_per_s, reply.PEAK_MEM_MB: result.peak_mem_mb,
            reply.SKIPPED: 0.0, reply.PARTITION_ID: partition_id, reply.NUM_PARTITIONS: num_partitions,
            reply.DEVICE_BATCH_SIZE: float(min(settings.batch_size, len(images))),
            reply.DEVICE_PRECISION_BITS: float(PRECISION_BITS[settings.precision]),
            reply.DEVICE_THREADS: float(settings.threads), reply.DEVICE_MEMORY_MB: profile.memory_mb,
        }
        metrics = falsify(metrics, mode, honest)
    log.info("round %d (%d torch threads): %s %s", server_round, torch.get_num_threads(), metrics, merge_metrics)

    # 5. Keep the local parts on the device; reply with the backbone (and the heads under transport-scope "model").
    context.state[reply.LOCAL_STATE] = _record(to_numpy(model.local_state()))
    return RecordDict({
        reply.ARRAYS: _record(shared_arrays(model, cfg.transport_scope, cfg.transport_dtype)),
        reply.METRICS: MetricRecord(metrics),
    })


def _load_backbone(model: SSLModel, global_backbone: dict[str, torch.Tensor], cfg: RunConfig,
                   context: Context) -> dict[str, float]:
    """Load the global backbone, or its FedU/FedEMA merge with this device's previous one."""
    if cfg.client_update == "none" or LOCAL_BACKBONE not in context.state:
        model.backbone.load_state_dict(global_backbone, strict=True)
        return {}
    local = _tensors(context.state[LOCAL_BACKBONE])
    if cfg.client_update == "fedu":
        chosen, adopted = fedu(local, global_backbone, cfg.fedu_threshold)
        model.backbone.load_state_dict(chosen, strict=True)
        return {"fedu-adopted": float(adopted)}
    state = context.state.config_records.get(MERGE_STATE, ConfigRecord())
    scale = float(state["scale"]) if "scale" in state else fedema_scale(local, global_backbone, cfg.fedema_tau)
    context.state[MERGE_STATE] = ConfigRecord({"scale": scale})
    merged, mu = fedema(local, global_backbone, scale)
    model.backbone.load_state_dict(merged, strict=True)
    return {"fedema-mu": mu}


def _torch_device(accelerator: str) -> str:
    """Where to train: CUDA when the device has it; a CUDA profile stated in the node config of a
    machine without it (a simulated Jetson) trains on the CPU, autocast and all."""
    if accelerator == "cuda" and not torch.cuda.is_available():
        log.warning("node config says 'device-accelerator' = 'cuda' but torch sees no CUDA: training on the CPU")
        return "cpu"
    return accelerator


def _optimizer_state(context: Context) -> dict | None:
    """The optimiser state this device kept after its last round, if any."""
    record = context.state.config_records.get(OPTIMIZER_STATE)
    if record is None:
        return None
    return torch.load(io.BytesIO(record["torch"]), map_location="cpu", weights_only=True)


def _keep_optimizer_state(context: Context, state: dict | None) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    context.state[OPTIMIZER_STATE] = ConfigRecord({"torch": buffer.getvalue()})


def _tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return to_torch({k: v.numpy() for k, v in record.items()})


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()})
