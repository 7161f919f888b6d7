"""Item 4: aggregating 10, 100 and 1000 ResNet-18 backbone updates — seconds and peak memory.

Each case runs in a fresh Python process (clean peak-memory figures):

* ``ours_lazy``: our ``fedavg`` (``server_app.aggregation``) fed a lazy ``Sequence`` whose k-th
  update is a view into a pool of distinct updates larger than the L3 cache, so every read comes
  from memory but nothing is held per client: the arithmetic's own cost.
* ``ours_list``: the same function fed a list of N distinct updates, as the strategy passes them.
* ``strategy``: ``FedSSL.aggregate_train`` on N real reply ``Message``s (decode, validate, norm
  screening, aggregate): what the ServerApp really holds and spends.
* ``fedmedian_list``: a robust rule (Flower's ``aggregate_median`` behind ours) on a list.
* ``reference``: a streaming NumPy FedAvg that consumes a generator client by client
  (float64 accumulator, like ours) and holds one update at a time.

Seconds come from the best of up to 5 passes without tracemalloc; memory from one more pass with it:
``input_mb`` is what the caller holds before the call (for the streamed cases, the pool that stands in
for replies arriving one by one), ``working_mb`` what the call allocates on top (peak); ``held`` counts
both in update sizes (one update in flight for the streamed cases). The
memory-bandwidth bound is ``N x update bytes / streaming bandwidth``, the bandwidth measured with a
large in-place ``np.add`` in the same run. Cases whose projected memory exceeds 40 % of the machine's
available memory are not run; their projection is reported instead.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from bench.machine import mem_available_bytes, run_worker
from bench.results import goal

NAME = "aggregation"
RESULT_KEYS = ("model", "update_mb", "bandwidth_gbps", "cases")
RESNET18 = {"model.encoder": "resnet18", "model.in-channels": 3, "model.image-size": 32,
            "model.embedding-dim": 512, "model.small-stem": True, "model.readout": "pool"}
FULL = {"clients": (10, 100, 1000), "pool": 12, "list": (10, 100), "strategy": (10, 20), "median": (10,),
        "bandwidth_mb": 512}
QUICK = {"clients": (10,), "pool": 2, "list": (10,), "strategy": (10,), "median": (), "bandwidth_mb": 128}
MEMORY_BUDGET = 0.4  # of MemAvailable
MAX_HELD = 4  # update sizes a streaming server needs at most (accumulator in float64 = 2, one update, slack)
MB = 2**20


# --- the workloads (run inside a worker process) ---------------------------------
def base_update() -> dict[str, np.ndarray]:
    import torch

    from fedssl.config import RunConfig
    from fedssl.ssl import build_ssl_model
    from fedssl.state import backbone_arrays

    cfg = RunConfig.from_flat(RESNET18)
    torch.manual_seed(0)
    return backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))


def make_pool(base: Mapping[str, np.ndarray], size: int) -> list[dict[str, np.ndarray]]:
    """``size`` distinct updates: the base plus small float32 noise (no float64 temporaries)."""
    rng = np.random.default_rng(1)
    pool = []
    for _ in range(size):
        pool.append({k: (v + rng.standard_normal(v.shape, dtype=np.float32) * np.float32(0.01)).astype(v.dtype)
                     if np.issubdtype(v.dtype, np.floating) else v.copy() for k, v in base.items()})
    return pool


class PooledUpdates(Sequence):
    """N updates without N copies: update k is pool member ``k % len(pool)`` (a lazy ``Sequence``)."""

    def __init__(self, pool: list[dict[str, np.ndarray]], n: int) -> None:
        self.pool, self.n = pool, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self.n))]
        if not -self.n <= k < self.n:
            raise IndexError(k)
        return self.pool[k % self.n % len(self.pool)]


def examples(n: int) -> list[float]:
    return [float(100 + 10 * (k % 7)) for k in range(n)]


def streaming_fedavg(stream: Iterable[tuple[float, Mapping[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """The reference: one pass over a stream of ``(num_examples, update)``, one update held at a time."""
    acc: dict[str, np.ndarray] = {}
    ints: dict[str, np.ndarray] = {}
    total = 0.0
    for n, arrays in stream:
        if not acc and not ints:
            acc = {k: np.zeros(v.shape, np.float64) for k, v in arrays.items() if np.issubdtype(v.dtype, np.floating)}
            ints = {k: v.copy() for k, v in arrays.items() if k not in acc}
        for k, v in arrays.items():
            if k in acc:
                acc[k] += n * v  # float32 product (NEP 50), accumulated in float64
            else:
                np.maximum(ints[k], v, out=ints[k])
        total += n
    return {**{k: (a / total).astype(np.float32) for k, a in acc.items()}, **ints}


def reply_messages(updates: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float], first_node: int = 1) -> list:
    """Valid train replies from nodes ``first_node, first_node + 1, ...`` (to instructions ``i<node>``)."""
    from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict

    from fedssl import reply

    messages = []
    for node, (arrays, n) in enumerate(zip(updates, weights), start=first_node):
        metrics = {k: 0.0 for k in reply.METRIC_KEYS} | {reply.NUM_EXAMPLES: n, reply.LOSS: 1.0, reply.Z_STD: 1.0,
                                                         reply.RANKME: 100.0, reply.PARTITION_ID: float(node),
                                                         reply.STEPS: 50.0}  # n <= steps x batch size: valid
        content = RecordDict({reply.ARRAYS: ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()}),
                              reply.METRICS: MetricRecord(metrics)})
        metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0,
                            reply_to_message_id=f"i{node}", group_id="1", created_at=time.time(), ttl=3600.0,
                            message_type="train")
        messages.append(Message(content=content, metadata=metadata))
    return messages


def distinct_updates(base: Mapping[str, np.ndarray], n: int, pool_size: int) -> list[dict[str, np.ndarray]]:
    """N updates each in its own memory, as N decoded replies are."""
    pool = make_pool(base, min(pool_size, n))
    return [{k: v.copy() for k, v in pool[i % len(pool)].items()} for i in range(n)]


def prepare(kind: str, n: int, pool_size: int):
    """Inputs held before the call, and the call itself."""
    from fedssl.config import RunConfig
    from server_app.aggregation import fedavg, fedmedian

    base = base_update()
    w = examples(n)
    if kind in ("ours_lazy", "reference"):
        pool = make_pool(base, min(pool_size, n))
        if kind == "ours_lazy":
            updates = PooledUpdates(pool, n)
            return (pool,), lambda: fedavg(updates, w, w, base)
        return (pool,), lambda: streaming_fedavg((w[k], pool[k % len(pool)]) for k in range(n))
    listed = distinct_updates(base, n, pool_size)
    if kind == "ours_list":
        return (listed,), lambda: fedavg(listed, w, w, base)
    if kind == "fedmedian_list":
        return (listed,), lambda: fedmedian(listed, w, w, base)
    if kind == "strategy":
        from server_app.strategy import FedSSL

        messages = reply_messages(listed, w)
        del listed
        strategy = FedSSL(RunConfig.from_flat(RESNET18), base)

        def one_round():
            strategy.global_arrays = base  # every repeat starts from the same global model
            return strategy.aggregate_train(1, messages)
        return (messages,), one_round
    raise ValueError(f"unknown case kind {kind!r}")


def checksum(out: Any) -> float:
    arrays = out if isinstance(out, dict) else {k: v.numpy() for k, v in out[0].items()}
    return float(sum(v.astype(np.float64).sum() for v in arrays.values() if np.issubdtype(v.dtype, np.floating)))


def repeats(n: int, quick: bool) -> int:
    return 1 if quick else (5 if n <= 10 else (3 if n <= 100 else 1))


def strategy_breakdown(messages: list, base: Mapping[str, np.ndarray], quick: bool) -> dict[str, float]:
    """Seconds of the strategy's steps, each alone (best of a few): decode, validate + update norm, the rule."""
    from fedssl import reply
    from server_app.aggregation import fedavg
    from server_app.screening import check_structure

    best: dict[str, float] = {}
    for _ in range(repeats(len(messages), quick)):
        t0 = time.perf_counter()
        decoded = [{k: v.numpy() for k, v in m.content[reply.ARRAYS].items()} for m in messages]
        t1 = time.perf_counter()
        for arrays in decoded:
            check_structure(arrays, base)  # also measures the update norm, in the same read
        t2 = time.perf_counter()
        w = examples(len(decoded))
        fedavg(decoded, w, w, base)
        t3 = time.perf_counter()
        for key, value in (("decode_s", t1 - t0), ("check_structure_s", t2 - t1), ("fedavg_s", t3 - t2)):
            best[key] = min(best.get(key, value), value)
        del decoded
    return best


def worker(kind: str, n: int, pool_size: int, quick: bool = False) -> dict[str, Any]:
    """Time the call (best of a few), then measure its memory with tracemalloc in one more call."""
    held, call = prepare(kind, n, pool_size)  # held keeps the inputs alive, as a caller would
    times = []
    for _ in range(repeats(n, quick)):
        gc.collect()
        started = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - started)
        total = checksum(out)
        del out
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    out = call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del out
    import resource

    result = {"seconds": min(times), "seconds_median": float(np.median(times)), "repeats": len(times),
              "working_mb": (peak - before) / MB, "checksum": total,
              "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if kind == "strategy":
        result["breakdown"] = strategy_breakdown(held[0], base_update(), quick)
    return result


def bandwidth(mb: int) -> dict[str, float]:
    """Streaming memory bandwidth (GB/s): in-place ``a += b`` (read a, b; write a) and a copy; best of 3."""
    a = np.ones(mb * MB // 4, dtype=np.float32)
    b = np.ones_like(a)
    add, copy = [], []
    for _ in range(3):
        t = time.perf_counter()
        np.add(a, b, out=a)
        add.append(3 * a.nbytes / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        np.copyto(b, a)
        copy.append(2 * a.nbytes / (time.perf_counter() - t) / 1e9)
    return {"add_gbps": max(add), "copy_gbps": max(copy), "array_mb": float(mb)}


# --- the driver (runs in the benchmark process) ------------------------------------
def _spawn(args: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    return run_worker("bench.bench_aggregation", args, timeout)


def projected_bytes(kind: str, n: int, pool: int, update: int) -> int:
    held = {"ours_lazy": min(pool, n), "reference": min(pool, n), "ours_list": n, "strategy": n,
            "fedmedian_list": 3 * n}[kind]
    return (held + 4) * update


def run(quick: bool) -> dict[str, Any]:
    size = QUICK if quick else FULL
    base = base_update()
    update_bytes = int(sum(v.nbytes for v in base.values()))
    params = int(sum(v.size for v in base.values()))
    del base
    bw = _spawn({"kind": "bandwidth", "mb": size["bandwidth_mb"]})
    plan = [(k, n) for n in size["clients"] for k in ("ours_lazy", "reference")]
    plan += [("ours_list", n) for n in size["list"]] + [("strategy", n) for n in size["strategy"]]
    plan += [("fedmedian_list", n) for n in size["median"]]
    if not quick:
        plan += [("ours_list", n) for n in size["clients"] if n not in size["list"]]
        plan += [("strategy", n) for n in size["clients"] if n not in size["strategy"]]
    cases = []
    for kind, n in plan:
        need = projected_bytes(kind, n, size["pool"], update_bytes)
        budget = MEMORY_BUDGET * mem_available_bytes()
        case: dict[str, Any] = {"kind": kind, "clients": n, "projected_mb": need / MB}
        if need > budget:
            case.update({"seconds": None, "working_mb": None, "skipped": f"projected {need / 2**30:.1f} GiB > "
                         f"{MEMORY_BUDGET:.0%} of available memory ({budget / MEMORY_BUDGET / 2**30:.1f} GiB)"})
        else:
            case.update(_spawn({"kind": kind, "clients": n, "pool": size["pool"], "quick": quick}))
            streamed = kind in ("ours_lazy", "reference")  # the pool stands in for replies arriving one by one
            case["input_mb"] = (min(size["pool"], n) if streamed else n) * update_bytes / MB
            case["held_updates"] = (1 if streamed else n) + case["working_mb"] / (update_bytes / MB)
        cases.append(case)
    bw_end = _spawn({"kind": "bandwidth", "mb": size["bandwidth_mb"]})
    best_bw = max(bw["add_gbps"], bw_end["add_gbps"])
    for case in cases:
        bound = case["clients"] * update_bytes / (best_bw * 1e9)
        case["bound_seconds"] = bound
        case["ratio_to_bound"] = case["seconds"] / bound if case.get("seconds") else None
        case["working_per_update"] = case["working_mb"] / (update_bytes / MB) if case.get("working_mb") else None
    by = {(c["kind"], c["clients"]): c for c in cases}
    for case in cases:
        ref = by.get(("reference", case["clients"]))
        if ref and ref.get("seconds") and case.get("seconds"):
            case["ratio_to_reference"] = case["seconds"] / ref["seconds"]
            case["checksum_rel_diff"] = abs(case["checksum"] - ref["checksum"]) / abs(ref["checksum"])
    return {
        "reference": "a streaming NumPy FedAvg over a generator (one update held at a time), and the "
                     "memory-bandwidth bound N x update bytes / measured bandwidth",
        "goals": _goals(by, size, update_bytes),
        "results": {"model": "ResNet-18 backbone (3x3 stem, 512-d)", "params": params,
                    "update_mb": update_bytes / MB, "bandwidth_gbps": {"start": bw, "end": bw_end},
                    "pool_updates": size["pool"], "memory_budget_fraction": MEMORY_BUDGET, "cases": cases},
    }


def _goals(by: dict, size: dict, update_bytes: int) -> list[dict[str, Any]]:
    small, large = min(size["clients"]), max(size["clients"])
    lazy_small, lazy_large = by[("ours_lazy", small)], by[("ours_lazy", large)]
    growth = lazy_large["working_mb"] / lazy_small["working_mb"]
    strategy = max((c for k, c in by.items() if k[0] == "strategy" and c.get("working_mb") is not None),
                   key=lambda c: c["clients"])
    held = strategy["held_updates"]
    own = strategy["working_mb"] / (update_bytes / MB)
    speed = lazy_large["seconds"] / by[("reference", large)]["seconds"]
    return [
        goal(f"aggregation memory O(model), {small} -> {large} lazy updates", "working memory flat (ratio ~1)",
             growth, growth < 1.5, f"our fedavg's working memory grows {growth:.2f}x from {small} to {large} "
             "clients", "times"),
        goal(f"strategy's own memory beyond the replies ({strategy['clients']} replies)",
             f"O(model): at most {MAX_HELD} update sizes", own, own <= MAX_HELD,
             f"FedSSL.aggregate_train's peak allocation (decode, screening, rule) = {own:.1f} update sizes "
             f"for {strategy['clients']} replies", "updates"),
        goal(f"server memory as the strategy runs it ({strategy['clients']} replies)",
             f"O(model): at most {MAX_HELD} update sizes", held, held <= MAX_HELD,
             f"Flower's replies + the strategy's working memory = {held:.1f} update sizes for "
             f"{strategy['clients']} clients (the replies grow with N); see the memory finding in bench/README.md",
             "updates"),
        goal(f"aggregation time vs streaming NumPy reference ({large} updates)", "no slower (ratio <= 1.1)", speed,
             speed <= 1.1, "our fedavg fed a lazy Sequence vs the generator reference", "times"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", required=True, help="JSON case spec (internal)")
    spec = json.loads(parser.parse_args().worker)
    if spec["kind"] == "bandwidth":
        result = bandwidth(spec["mb"])
    else:
        result = worker(spec["kind"], spec["clients"], spec["pool"], spec.get("quick", False))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
