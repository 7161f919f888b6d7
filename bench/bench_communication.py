"""Item 3: bytes per round — backbone-only vs the full SSL model, float32 vs float16 transport.

The reference is the full model (backbone + heads + predictors + momentum targets + queues) sent in
float32, measured in the same run; every other figure is a ratio to it. Sizes are Flower's own
counts: ``ArrayRecord.count_bytes()`` (what ``metrics.json`` reports) and the serialized protobuf
``RecordDict`` (what goes on the wire). The ClientApp's real reply is measured too, to check that
it sends exactly the computed backbone. A round costs, per client, the global backbone down
(always float32) plus its update up (in ``transport-dtype``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, RecordDict
from flwr.common.serde import recorddict_to_proto

from bench.results import goal
from client_app.app import train_round
from fedssl import reply
from fedssl.config import VIDEO_ONLY_METHODS, RunConfig
from fedssl.modality import build_backbone
from fedssl.ssl import METHODS, build_ssl_model
from fedssl.state import backbone_arrays, to_numpy
from launcher.flwr_cli import VIDEO_RUN

NAME = "communication"
RESULT_KEYS = ("clients_per_round", "models", "clientapp_reply")
CLIENTS = 10
ENCODERS = {
    "smallcnn": {"model.encoder": "smallcnn"},
    "resnet18": {"model.encoder": "resnet18", "model.in-channels": 3, "model.image-size": 32,
                 "model.embedding-dim": 512, "model.small-stem": True, "model.readout": "pool"},
}
# issue 17: FedVSSL's backbone (r3d-18) and the CPU default (r3d-tiny), with the video methods
VIDEO_ENCODERS = {
    "r3d-tiny": {**VIDEO_RUN, "video.encoder": "r3d-tiny"},
    "r3d-18": {**VIDEO_RUN, "video.encoder": "r3d-18", "model.embedding-dim": 512},
}
VIDEO_METHODS = ("simclr", "playback-speed", "catch-the-patch")


def record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()})


def sizes(arrays: dict[str, np.ndarray]) -> dict[str, int]:
    rec = record(arrays)
    return {"count_bytes": rec.count_bytes(), "wire_bytes": recorddict_to_proto(RecordDict({"arrays": rec})).ByteSize()}


def fp16_error(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """Relative L2 error of the float weights after a float16 round trip (what the server receives)."""
    floats = [a.ravel() for a in arrays.values() if np.issubdtype(a.dtype, np.floating)]
    w = np.concatenate(floats).astype(np.float64)
    err = w - w.astype(np.float16).astype(np.float64)
    return {"relative_l2": float(np.linalg.norm(err) / np.linalg.norm(w)), "max_abs": float(np.abs(err).max())}


def measure_model(encoder: str, method: str) -> dict[str, Any]:
    cfg = RunConfig.from_flat({**{**ENCODERS, **VIDEO_ENCODERS}[encoder], "ssl.method": method})
    torch.manual_seed(0)
    model = build_ssl_model(cfg.ssl, cfg.model, backbone=build_backbone(cfg))
    variants = {
        "full_fp32": to_numpy(model.state_dict(), "float32"),
        "full_fp16": to_numpy(model.state_dict(), "float16"),
        "backbone_fp32": backbone_arrays(model, "float32"),
        "backbone_fp16": backbone_arrays(model, "float16"),
    }
    measured = {name: sizes(arrays) for name, arrays in variants.items()}
    ref = measured["full_fp32"]["count_bytes"]
    per_round = {  # per client: down (float32 global backbone) + up (the update)
        "full_fp32": 2 * ref,
        "backbone_fp32": 2 * measured["backbone_fp32"]["count_bytes"],
        "backbone_fp16_up": measured["backbone_fp32"]["count_bytes"] + measured["backbone_fp16"]["count_bytes"],
    }
    return {
        "encoder": encoder, "method": method,
        "backbone_params": int(sum(a.size for a in variants["backbone_fp32"].values())),
        "full_params": int(sum(a.size for a in variants["full_fp32"].values())),
        "bytes": measured,
        "ratio_to_full_fp32": {name: m["count_bytes"] / ref for name, m in measured.items()},
        "round_bytes_per_client": per_round,
        "round_bytes_all_clients": {k: v * CLIENTS for k, v in per_round.items()},
        "round_ratio_to_full_fp32": {k: v / per_round["full_fp32"] for k, v in per_round.items()},
        "fp16_error": fp16_error(variants["backbone_fp32"]),
    }


def clientapp_reply(quick: bool) -> dict[str, Any]:
    """The real ClientApp's reply for one short round, in float32 and float16."""
    out = {}
    for dtype in ("float32", "float16"):
        run_config = {"data.max-samples": 64, "train.batch-size": 32, "train.max-steps": 1, "transport-dtype": dtype}
        cfg = RunConfig.from_flat(run_config)
        torch.manual_seed(0)
        arrays = backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))
        context = Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 10},
                          state=RecordDict(), run_config=cfg.to_flat())
        content = train_round(record(arrays), 1, context)
        out[dtype] = {"count_bytes": content[reply.ARRAYS].count_bytes(),
                      "computed_backbone_bytes": sizes(backbone_arrays(build_ssl_model(cfg.ssl, cfg.model), dtype))[
                          "count_bytes"]}
    out["fp16_to_fp32"] = out["float16"]["count_bytes"] / out["float32"]["count_bytes"]
    return out


def run(quick: bool) -> dict[str, Any]:
    methods = ("simclr", "byol") if quick else [m for m in METHODS.names() if m not in VIDEO_ONLY_METHODS
                                                 and m != "segment-order"]  # audio/video pretexts: not for images
    models = [measure_model(enc, m) for enc in ENCODERS for m in methods]
    video = ("r3d-tiny",) if quick else tuple(VIDEO_ENCODERS)
    models += [measure_model(enc, m) for enc in video for m in (VIDEO_METHODS[:1] if quick else VIDEO_METHODS)]
    real = clientapp_reply(quick)
    best = min(m["round_ratio_to_full_fp32"]["backbone_fp16_up"] for m in models)
    worst = max(m["round_ratio_to_full_fp32"]["backbone_fp16_up"] for m in models)
    return {
        "reference": "the full SSL model (all state-dict entries) in float32, up and down",
        "goals": [goal("bytes per round: backbone-only, fp16 up vs full model fp32", "smaller (no numeric goal in "
                       "the issue)", worst, None, f"worst over methods and encoders; best {best:.3f}")],
        "results": {"clients_per_round": CLIENTS, "models": models, "clientapp_reply": real},
    }
