"""Issue 19 items 1-2: the ServerApp's peak memory and time for a round of 10, 100 and 1,000 replies.

A new protocol beside section 4 (``bench_aggregation.py``, which times the rule and the strategy on
replies already in memory). Here the round runs as the ServerApp runs it: ``FedSSL.aggregate_train``
consuming ``Grid.send_and_receive``, with the Grid a simulated SuperLink (:class:`PooledSuperLink`)
that builds each reply ``Message`` only when it is pulled (serialising a pool update into it, as a
real pull deserialises one from the network), so what the ServerApp holds is what it pulled and kept.

Cases, each in a fresh process (clean peak-memory figures, tracemalloc):

* ``streamed``: ``aggregation.streaming = true`` (the default): ``StreamingGrid`` pulls a few ids at a
  time and the strategy folds each screened reply in, then drops it.
* ``collected``: streaming off: Flower's ``send_and_receive`` contract (every reply in one list), then
  the strategy; what the ServerApp did before.
* ``reference``: a streaming NumPy FedAvg over the same pulled messages (decode each, accumulate in
  float64, drop): the least any server must do with Flower's messages. The time goal compares with it.

Every measured round is a run's first (no norm history), the worst case: the streamed round holds its
first five candidates until the norm screen has a median. The strategy runs without the server's
collapse verification (``filter.probe-size = 0``): its cost is per reply and independent of streaming
(section 7 measures it). ``held`` = peak allocation / update size.
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

from bench.bench_aggregation import examples, make_pool, reply_messages
from bench.machine import mem_available_bytes, run_worker
from bench.results import goal

NAME = "streaming"
RESULT_KEYS = ("models", "cases")
MODELS = {
    "smallcnn": {"model.encoder": "smallcnn", "model.embedding-dim": 128, "model.readout": "pool"},
    "resnet18": {"model.encoder": "resnet18", "model.in-channels": 3, "model.image-size": 32,
                 "model.embedding-dim": 512, "model.small-stem": True, "model.readout": "pool"},
}
FULL = {"clients": (10, 100, 1000), "pool": 12, "collected": (10, 100, 1000), "repeats": 2}
QUICK = {"clients": (10,), "pool": 2, "collected": (10,), "repeats": 1}
MEMORY_BUDGET = 0.4  # of MemAvailable: a case projected above it is not run
# update sizes a streamed round may hold: float64 sums (2), the global model (1), the pulled replies (2) and,
# in a run's first round (what is measured), the 5 candidates held until the norm screen has a median
MAX_HELD = 12
MB = 2**20


class PooledSuperLink:
    """The Grid calls the ServerApp makes, over N simulated replies that exist only once pulled.

    Reply k is pool update ``k % len(pool)`` in a fresh ``Message`` (its arrays serialised anew), like a
    pull from a real SuperLink, which lives in another process.
    """

    def __init__(self, pool: Sequence[Mapping[str, np.ndarray]], n: int) -> None:
        self.pool, self.n, self.weights = pool, n, examples(n)

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        return [f"i{k + 1}" for k, _ in enumerate(messages)]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        out = []
        for mid in message_ids:
            k = int(mid[1:]) - 1
            out += reply_messages([self.pool[k % len(self.pool)]], [self.weights[k]], first_node=k + 1)
        return out

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        """Flower's contract: push, then every reply in one list."""
        return self.pull_messages(self.push_messages(messages))

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.n + 1))


def base_update(model: str) -> dict[str, np.ndarray]:
    import torch

    from fedssl.config import RunConfig
    from fedssl.ssl import build_ssl_model
    from fedssl.state import backbone_arrays

    cfg = RunConfig.from_flat(MODELS[model])
    torch.manual_seed(0)
    return backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))


def reference_fedavg(replies: Iterable[Any]) -> dict[str, np.ndarray]:
    """Decode each reply, accumulate ``n_k x_k`` in float64, drop it (integers: the largest)."""
    from fedssl import reply

    acc: dict[str, np.ndarray] = {}
    ints: dict[str, np.ndarray] = {}
    total = 0.0
    for msg in replies:
        n = float(msg.content[reply.METRICS][reply.NUM_EXAMPLES])
        for key, array in msg.content[reply.ARRAYS].items():
            value = array.numpy()
            if np.issubdtype(value.dtype, np.floating):
                if key not in acc:
                    acc[key] = np.zeros(value.shape, np.float64)
                acc[key] += n * value
            else:
                ints[key] = value if key not in ints else np.maximum(ints[key], value)
        total += n
    return {**{k: (a / total).astype(np.float32) for k, a in acc.items()}, **ints}


def prepare(kind: str, model: str, n: int, pool_size: int):
    """The simulated SuperLink (held outside the ServerApp) and one round as the ServerApp runs it."""
    from fedssl.config import RunConfig
    from server_app.reply_stream import StreamingGrid
    from server_app.step_guard import StepGuard
    from server_app.strategy import FedSSL

    base = base_update(model)
    link = PooledSuperLink(make_pool(base, min(pool_size, n)), n)
    instructions = [None] * n  # what configure_train would push (their content does not matter here)
    if kind == "reference":
        return link, lambda: reference_fedavg(StreamingGrid(link).send_and_receive(instructions, timeout=3600))
    cfg = RunConfig.from_flat({**MODELS[model], "filter.probe-size": 0,
                               "aggregation.streaming": kind == "streamed"})
    strategy = FedSSL(cfg, base)
    grid = StreamingGrid(link) if kind == "streamed" else link

    def one_round():
        strategy.global_arrays = base  # every repeat starts from the same global model
        strategy.guard = StepGuard(cfg.filter)  # ... in a run's first round: no history, 5 candidates held
        arrays, _ = strategy.aggregate_train(1, grid.send_and_receive(instructions, timeout=3600))
        assert strategy.round_record(1).accepted == n, strategy.round_record(1).excluded[:3]
        return {k: v.numpy() for k, v in arrays.items()}
    return link, one_round


def worker(kind: str, model: str, n: int, pool_size: int, repeats: int) -> dict[str, Any]:
    link, call = prepare(kind, model, n, pool_size)  # the link is the SuperLink's memory, not the ServerApp's
    times = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - started)
        checksum = float(sum(v.astype(np.float64).sum() for v in out.values() if v.dtype.kind == "f"))
        del out
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"seconds": min(times), "repeats": len(times), "peak_mb": (peak - before) / MB, "checksum": checksum}


def _spawn(args: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    return run_worker("bench.bench_streaming", args, timeout)


def run(quick: bool) -> dict[str, Any]:
    size = QUICK if quick else FULL
    models, cases = {}, []
    for model in MODELS:
        base = base_update(model)
        update_mb = sum(v.nbytes for v in base.values()) / MB
        models[model] = {"update_mb": update_mb, "params": int(sum(v.size for v in base.values()))}
        plan = [(kind, n) for n in size["clients"] for kind in ("reference", "streamed")]
        plan += [("collected", n) for n in size["collected"]]
        for kind, n in plan:
            case: dict[str, Any] = {"model": model, "kind": kind, "clients": n}
            need = (n + 6 if kind == "collected" else size["pool"] + 6) * update_mb * MB
            if need > MEMORY_BUDGET * mem_available_bytes():
                case.update({"seconds": None, "peak_mb": None, "held_updates": None,
                             "skipped": f"projected {need / 2**30:.1f} GiB > {MEMORY_BUDGET:.0%} of available memory"})
            else:
                case.update(_spawn({"kind": kind, "model": model, "clients": n, "pool": size["pool"],
                                    "repeats": 1 if n >= 1000 else size["repeats"]}))
                case["held_updates"] = case["peak_mb"] / update_mb
            cases.append(case)
    by = {(c["model"], c["kind"], c["clients"]): c for c in cases}
    for case in cases:
        ref = by.get((case["model"], "reference", case["clients"]))
        if ref is not None and ref.get("seconds") and case.get("seconds"):
            case["ratio_to_reference"] = case["seconds"] / ref["seconds"]
            case["checksum_rel_diff"] = abs(case["checksum"] - ref["checksum"]) / abs(ref["checksum"])
    return {
        "reference": "a streaming NumPy FedAvg over the same pulled reply messages (decode, float64 sum, drop)",
        "goals": _goals(by, size),
        "results": {"models": models, "pool_updates": size["pool"], "cases": cases,
                    "verification": "off (filter.probe-size = 0): per reply, the same either way"},
    }


def _goals(by: dict, size: dict) -> list[dict[str, Any]]:
    small, large = min(size["clients"]), max(size["clients"])
    goals = []
    for model in MODELS:
        streamed_large = by[(model, "streamed", large)]
        held = streamed_large["held_updates"]
        growth = held / by[(model, "streamed", small)]["held_updates"]
        goals.append(goal(f"ServerApp peak memory, streamed round, {model}, {small} -> {large} replies",
                          f"flat, at most {MAX_HELD} update sizes", held, held <= MAX_HELD and growth < 1.5,
                          f"{held:.1f} update sizes at {large} replies ({growth:.2f}x the {small}-reply round); "
                          f"collected: {_held(by, model, 'collected', large)}", "updates"))
        ratio = streamed_large.get("ratio_to_reference")
        goals.append(goal(f"streamed round time vs streaming NumPy reference, {model}, {large} replies",
                          "within 1.1x", ratio, ratio is not None and ratio <= 1.1,
                          "screening (structure, finite values, step norm) and the fold, against decode + sum",
                          "times"))
    return goals


def _held(by: dict, model: str, kind: str, n: int) -> str:
    case = by.get((model, kind, n))
    if case is None or case.get("held_updates") is None:
        return f"not run at {n} ({case.get('skipped', '')})" if case else f"not run at {n}"
    return f"{case['held_updates']:.1f} update sizes"


def markdown(d: dict[str, Any]) -> str:
    """The section's table (rendered into bench/README.md)."""
    r = d["results"]
    rows = []
    for c in r["cases"]:
        update_mb = r["models"][c["model"]]["update_mb"]
        rows.append([c["model"], c["clients"], c["kind"], _num(c.get("seconds")), _num(c.get("ratio_to_reference")),
                     _num(c.get("peak_mb"), 1), _num(c.get("held_updates"), 1), f"{update_mb:.2f}",
                     c.get("skipped", "")])
    head = ["model", "replies", "round", "seconds", "vs reference", "peak MB", "held (update sizes)", "update MB",
            "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return ("Peak allocation of one round as the ServerApp runs it (replies pulled from a simulated SuperLink that "
            f"builds each on demand; verification off: {r['verification']}). *held* = peak / update size.\n\n"
            + "\n".join(lines))


def _num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", required=True, help="JSON case spec (internal)")
    spec = json.loads(parser.parse_args().worker)
    result = worker(spec["kind"], spec["model"], spec["clients"], spec["pool"], spec["repeats"])
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
