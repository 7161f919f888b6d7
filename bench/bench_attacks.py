"""Attack matrix: scaled, sign-flipped and colluding updates against FedAvg and the robust rules, kNN after a round.

Protocol (one process, real local SimCLR training, real reply ``Message``s through ``FedSSL.aggregate_train``):

1. 10 clients (Dirichlet 0.5 shards of Fashion-MNIST) train round 1 from the same random backbone; FedAvg
   with the default screening aggregates them, which gives the round-2 global model and the history the
   step guard needs (one median norm, the previous global step).
2. The same 10 clients train round 2 from that model. Those honest updates are fixed; in each cell the
   first ``a`` of them (``a`` = 1, 2, 3) are replaced by an omniscient attacker's, each claiming the largest
   ``num-examples`` the round allows and copying its honest metrics:
   * ``scale``: its own step scaled to just under the norm-outlier limit (0.95 x max-norm-ratio x the
     median honest step norm);
   * ``sign-flip``: the same, sign flipped;
   * ``collusion``: every attacker sends the same step: minus the mean honest step, at that norm.
3. Each cell aggregates with one rule (fedavg, fedmedian, trimmedavg, krum) under one defence level:
   ``screening`` (what the strategy did before: contract, structure, reported collapse, round median),
   ``verify+clip`` (the defaults: the server measures collapse on its probe batch, steps clipped to
   3 x the recent median norm), ``+cosine`` (also ``filter.min-cosine`` = 0). kNN top-1 (k=200, exact
   cosine on the output embeddings, as the selection score) of the aggregate on a held-out probe.

Also measured: the spread of honest clients' reported vs server-measured collapse figures (what
``filter.claim-tolerance`` must admit), honest steps' cosine with the previous global step, and the
server's verification cost per reply.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import torch

NAME = "attacks"
RESULT_KEYS = ("size", "honest", "cells", "verify_ms_per_reply")
FULL = {"clients": 10, "steps": 10, "batch": 64, "gallery": 1000, "query": 500, "attackers": (1, 2, 3),
        "rules": ("fedavg", "fedmedian", "trimmedavg", "krum"), "attacks": ("scale", "sign-flip", "collusion")}
QUICK = {"clients": 4, "steps": 2, "batch": 32, "gallery": 200, "query": 100, "attackers": (1,),
         "rules": ("fedavg", "krum"), "attacks": ("sign-flip",)}
DEFENCES = {"screening": {"filter.probe-size": 0, "filter.clip-ratio": 0.0},
            "verify+clip": {},
            "+cosine": {"filter.min-cosine": 0.0}}
LIMIT_SHARE = 0.95  # an attacker's step norm, as a share of the norm-outlier limit
BACK_OFF = 0.5  # an attacker whose model looks collapsed on its own images shortens its step by this factor


def config(size: dict[str, Any], rule: str = "fedavg", **flat: Any):
    from fedssl.config import RunConfig

    return RunConfig.from_flat({"num-rounds": 2, "train.max-steps": size["steps"], "train.batch-size": size["batch"],
                                "data.max-samples": size["steps"] * size["batch"], "eval.tasks": "fashion-mnist",
                                "eval.gallery-size": size["gallery"], "eval.query-size": size["query"],
                                "aggregation.rule": rule, **flat})


def train_clients(cfg, start: dict[str, np.ndarray], shards: list[np.ndarray], server_round: int) -> list[dict]:
    """Each client's honest reply (arrays + contract metrics), trained from ``start`` as the ClientApp does."""
    from fedssl import reply
    from fedssl.ssl import build_ssl_model
    from fedssl.state import backbone_arrays, load_backbone
    from fedssl.train import RoundPosition, collapse_check, train_local

    out = []
    for k, images in enumerate(shards):
        torch.manual_seed(1000 * server_round + k)
        model = build_ssl_model(cfg.ssl, cfg.model)
        load_backbone(model, start)
        result = train_local(model, images, cfg.model, cfg.train, seed=cfg.seed + server_round,
                             max_samples=cfg.data.max_samples, position=RoundPosition(server_round, cfg.num_rounds))
        z, r = collapse_check(model.backbone, images, cfg.model, seed=cfg.seed)
        metrics = {key: 0.0 for key in reply.METRIC_KEYS} | {
            reply.NUM_EXAMPLES: float(result.num_examples), reply.LOSS: result.loss, reply.Z_STD: z, reply.RANKME: r,
            reply.STEPS: float(result.steps), reply.SECONDS: result.seconds, reply.PARTITION_ID: float(k),
            reply.NUM_PARTITIONS: float(len(shards))}
        out.append({"arrays": backbone_arrays(model), "metrics": metrics, "seconds": result.seconds})
    return out


def message(node: int, arrays: dict[str, np.ndarray], metrics: dict[str, float]):
    from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict

    from fedssl import reply

    content = RecordDict({reply.ARRAYS: ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()}),
                          reply.METRICS: MetricRecord(metrics)})
    metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                        reply_to_message_id=f"i{node}", group_id="1", created_at=time.time(), ttl=3600.0,
                        message_type="train")
    return Message(content=content, metadata=metadata)


def step(arrays: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: (v - ref[k]).astype(np.float32) for k, v in arrays.items() if np.issubdtype(v.dtype, np.floating)}


def norm(d: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.vdot(v, v)) for v in d.values())))


def cosine(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return sum(float(np.vdot(a[k], b[k])) for k in a) / (norm(a) * norm(b))


def craft(attack: str, i: int, honest: list[dict], g: dict[str, np.ndarray], shards: list[np.ndarray],
          cfg, verified: bool) -> dict:
    """Attacker ``i``'s reply: the attack's direction at the longest norm under every limit it faces.

    It starts just under the norm-outlier limit and claims the most examples the round allows. Against a
    server that only reads reports (``verified`` False) it copies its honest metrics. Against one that
    measures collapse itself, it halves its step until its own collapse check (on its own images, as every
    device runs it) clears the floors with margin, and reports those figures, so that the server's claims
    check sees only the usual device-vs-server difference.
    """
    from fedssl import reply
    from fedssl.models.encoders import build_encoder
    from fedssl.state import strip_prefix, to_torch
    from fedssl.train import collapse_check

    steps = [step(h["arrays"], g) for h in honest]
    target = LIMIT_SHARE * cfg.filter.max_norm_ratio * float(np.median([norm(s) for s in steps]))
    mean = {k: np.mean([s[k] for s in steps], axis=0) for k in steps[0]}
    direction = {"scale": steps[i], "sign-flip": {k: -v for k, v in steps[i].items()},
                 "collusion": {k: -v for k, v in mean.items()}}[attack]
    unit = 1.0 / norm(direction)
    f, dim = cfg.filter, cfg.model.embedding_dim
    claims = dict(honest[i]["metrics"]) | {reply.NUM_EXAMPLES: float(cfg.train.max_steps * cfg.train.batch_size),
                                           reply.STEPS: float(cfg.train.max_steps)}
    for _ in range(8):
        arrays = {k: (g[k] + target * unit * direction[k]).astype(g[k].dtype) if k in direction
                  else honest[i]["arrays"][k] for k in g}
        if not verified:
            break
        backbone = build_encoder(cfg.model)
        backbone.load_state_dict(strip_prefix(to_torch(arrays)), strict=True)
        z, r = collapse_check(backbone, shards[i], cfg.model, seed=cfg.seed)
        claims |= {reply.Z_STD: z, reply.RANKME: r}
        if z >= 1.5 * f.min_z_std and r / dim >= 1.5 * f.min_rankme_ratio:
            break
        target *= BACK_OFF
    return {"arrays": arrays, "metrics": claims, "norm": target}


def fingerprint(arrays) -> str:
    """A digest of every array's bytes: equal updates (the same honest reply in many cells) are measured once."""
    digest = hashlib.sha1()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()


def cached(verifier):
    """The server's verifier with its measurements memoised by update content (bench only: cells share replies)."""
    from server_app.verification import CollapseVerifier

    class CachedVerifier(CollapseVerifier):
        cache: dict = {}

        def measure(self, arrays):
            key = fingerprint(arrays)
            if key not in self.cache:
                self.cache[key] = super().measure(arrays)
            return self.cache[key]

    return CachedVerifier(verifier.cfg, verifier.images)


def knn_of(cfg, arrays: dict[str, np.ndarray], tasks, cache: dict) -> dict[str, float]:
    key = fingerprint(arrays)
    if key not in cache:
        cache[key] = _knn(cfg, arrays, tasks)
    return cache[key]


def _knn(cfg, arrays: dict[str, np.ndarray], tasks) -> dict[str, float]:
    from fedssl.models.encoders import build_encoder
    from fedssl.probe import probe_backbone
    from fedssl.state import strip_prefix, to_torch

    backbone = build_encoder(cfg.model)
    backbone.load_state_dict(strip_prefix(to_torch(arrays)), strict=True)
    scores = probe_backbone(backbone, tasks, cfg.model, cfg.eval, linear=False)
    return {"knn": scores.knn["fashion-mnist"], "knn_centred": scores.knn_centred["fashion-mnist"]}


def run(quick: bool) -> dict[str, Any]:
    from bench.results import goal
    from fedssl.data.fashion_mnist import fashion_mnist_shard
    from fedssl.probe import load_probe_tasks
    from fedssl.ssl import build_ssl_model
    from fedssl.state import backbone_arrays
    from server_app.strategy import FedSSL
    from server_app.verification import CollapseVerifier, claim_ratio

    torch.set_num_threads(1)
    size = QUICK if quick else FULL
    cfg = config(size)
    tasks = load_probe_tasks(cfg.eval, cfg.model.image_size, seed=cfg.seed)
    verifier = CollapseVerifier.from_gallery(cfg, tasks[0].gallery)
    shards = [fashion_mnist_shard(k, size["clients"], "dirichlet", alpha=0.5, classes_per_client=2, seed=0)
              for k in range(size["clients"])]
    torch.manual_seed(cfg.seed)
    g0 = backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))

    # Round 1, honest, FedAvg with the defaults: the history every cell starts round 2 from.
    round1 = train_clients(cfg, g0, shards, 1)
    base = FedSSL(config(size, **DEFENCES["+cosine"]), dict(g0), verifier=verifier)
    base.aggregate_train(1, [message(k + 1, h["arrays"], h["metrics"]) for k, h in enumerate(round1)])
    g1 = base.global_arrays
    round2 = train_clients(cfg, g1, shards, 2)

    # Honest figures: claims vs server measurement, cosines with the previous global step, norms.
    claims, verify_s = [], []
    for h in round1 + round2:
        started = time.perf_counter()
        got = verifier.measure(h["arrays"])
        verify_s.append(time.perf_counter() - started)
        dim = cfg.model.embedding_dim
        claims.append({"z_std": claim_ratio(h["metrics"]["z-std"], got.z_std),
                       "rankme": claim_ratio(h["metrics"]["rankme"] / min(512, dim),
                                             got.rankme / min(len(verifier.images), dim))})
    previous = step(g1, g0)
    cosines = [cosine(step(h["arrays"], g1), previous) for h in round2]
    norms1, norms2 = [norm(step(h["arrays"], g0)) for h in round1], [norm(step(h["arrays"], g1)) for h in round2]

    cells, crafted, knn_cache = [], {}, {}
    verifier = cached(verifier)
    for rule in size["rules"]:
        for defence, flat in DEFENCES.items():
            runs = [("none", 0)] + [(a, n) for a in size["attacks"] for n in size["attackers"]]
            for attack, count in runs:
                fed = FedSSL(config(size, rule, **flat), dict(g1),
                             verifier=verifier if flat.get("filter.probe-size", 1) else None)
                if defence != "screening":
                    fed.guard.load_state(base.guard.state())  # the history of round 1
                verified = fed.verifier is not None
                for i in range(count):
                    if (attack, i, verified) not in crafted:
                        crafted[(attack, i, verified)] = craft(attack, i, round2, g1, shards, cfg, verified)
                replies = [crafted[(attack, i, verified)] if i < count else h for i, h in enumerate(round2)]
                fed.aggregate_train(2, [message(k + 1, r["arrays"], r["metrics"]) for k, r in enumerate(replies)])
                record = fed.round_record(2)
                reasons: dict[str, int] = {}
                for e in record.excluded:
                    reasons[e.reason] = reasons.get(e.reason, 0) + 1
                cells.append({"rule": rule, "defence": defence, "attack": attack, "attackers": count,
                              "attack_norm": crafted[(attack, 0, verified)]["norm"] if count else 0.0,
                              "accepted": record.accepted, "clipped": record.clipped, "excluded": reasons,
                              "attackers_excluded": sum(1 for e in record.excluded if e.node_id <= count),
                              **knn_of(cfg, fed.global_arrays, tasks, knn_cache)})
                print(f"[attacks] {rule:10s} {defence:12s} {attack:9s} x{count}: kNN {cells[-1]['knn']:.4f} "
                      f"excluded {reasons} clipped {record.clipped} norm {cells[-1]['attack_norm']:.3g}", flush=True)

    clean = {(c["rule"], c["defence"]): c["knn"] for c in cells if c["attack"] == "none"}
    worst: dict[str, float] = {}
    for c in cells:  # the clean cell itself counts 0: a drop is never negative
        key = f"{c['rule']}/{c['defence']}"
        worst[key] = max(worst.get(key, 0.0), clean[(c["rule"], c["defence"])] - c["knn"])
    train_s = float(np.median([h["seconds"] for h in round1 + round2]))
    verify_ms = 1000 * float(np.median(verify_s))
    false_claims = sum(max(c.values()) > cfg.filter.claim_tolerance for c in claims)
    goals = [
        goal("FedAvg: worst kNN drop from one round of attack, defaults (verify+clip)", "<= 0.01 (1 point)",
             worst["fedavg/verify+clip"], worst["fedavg/verify+clip"] <= 0.01,
             f"screening only: {worst['fedavg/screening']:.3f}; +cosine: {worst['fedavg/+cosine']:.3f}", "points"),
        goal("honest replies rejected by the claims check", "0", float(false_claims), false_claims == 0,
             f"largest honest reported/measured factor {max(max(c.values()) for c in claims):.2f} "
             f"(tolerance {cfg.filter.claim_tolerance:g})", "ratio"),
        goal("server verification per reply vs the client's local training", "small (no numeric goal in the issue)",
             verify_ms / 1000 / train_s, None, f"{verify_ms:.0f} ms per reply ({len(verifier.images)} probe images, "
             f"{cfg.model.encoder}); local training {train_s:.1f} s", "ratio"),
    ]
    return {"reference": "the same rule on the same honest round-2 updates without attackers (clean cells)",
            "goals": goals,
            "results": {"size": {k: list(v) if isinstance(v, tuple) else v for k, v in size.items()},
                        "honest": {"claim_ratios": claims, "cosine_with_previous_step": cosines,
                                   "norms_round1": norms1, "norms_round2": norms2,
                                   "local_train_s_median": train_s},
                        "worst_drop": worst, "cells": cells, "verify_ms_per_reply": verify_ms}}


def markdown(d: dict[str, Any]) -> str:
    """The attack matrix as tables: one per defence level, kNN per rule (excluded attackers in brackets)."""
    r = d["results"]
    cells, size = r["cells"], r["size"]
    rules = list(dict.fromkeys(c["rule"] for c in cells))
    honest = r["honest"]
    spread = max(max(c.values()) for c in honest["claim_ratios"])
    cos = honest["cosine_with_previous_step"]
    parts = [f"{size['clients']} clients, {size['steps']} local steps of {size['batch']} images per round; round 2 "
             f"attacked; kNN top-1 (k=200, exact cosine, as the selection score) on {size['gallery']} gallery / "
             f"{size['query']} query images. In brackets: attackers excluded, and (c) when steps were clipped. "
             f"Server verification: {r['verify_ms_per_reply']:.0f} ms per reply. Honest replies' reported vs "
             f"server-measured collapse figures differ by at most x{spread:.2f}; honest steps' cosine with the "
             f"previous global step: {min(cos):.2f} to {max(cos):.2f}."]
    for defence in DEFENCES:
        rows = []
        for attack, count in dict.fromkeys((c["attack"], c["attackers"]) for c in cells):
            row = [f"{attack} x{count}" if count else "clean"]
            for rule in rules:
                c = next(x for x in cells if (x["rule"], x["defence"], x["attack"], x["attackers"])
                         == (rule, defence, attack, count))
                mark = (f" ({c['attackers_excluded']})" if count else "") + (" (c)" if c["clipped"] else "")
                row.append(f"{c['knn']:.4f}{mark}")
            rows.append(row)
        header = "| attack | " + " | ".join(rules) + " |\n|---|" + "---|" * len(rules) + "\n"
        parts.append(f"**{defence}**\n\n" + header + "\n".join("| " + " | ".join(row) + " |" for row in rows))
    return "\n\n".join(parts)
