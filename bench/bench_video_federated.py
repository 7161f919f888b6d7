"""Video, federated (issue 17 item 9): pretexts, aggregation rules and what travels, at one small budget.

Each federated cell runs through Flower's local simulation (``launcher.simulation``) on the generated
clip corpus (``scripts/make_video_corpus.py``, default size: 320 train + 120 test clips), with
``launcher.flwr_cli.VIDEO_RUN``'s settings: r3d-tiny, ``NODES`` simulated cameras holding 3 motions
each (non-IID), ``ROUNDS`` rounds of ``STEPS`` local steps of 32 clips, 2 cameras per round. The run's
own probes give its scores after the last round; its ``baseline_probes`` give raw pixels and random
init, measured in the same run. ``centralized:<method>`` trains one model in this process on the
pooled train split for as many steps as a federation makes in all (rounds x 2 x steps): equal compute.
After each plain FedAvg cell, ``fedssl.local_only`` (the demo's local-only baseline) trains every camera
alone on its own shard for exactly the rounds and steps it trained in that federation, from the same
initial encoder; its scores are the mean over the cameras (``local-only <method>`` rows).

A cell is ``<method>`` (FedAvg, backbone only), optionally ``@<variant>``:

- ``@fedvssl``: ``aggregation.rule = fedvssl`` with the paper's setting, alpha 0.9 and the SWA step
  (``launcher.flwr_cli.FEDVSSL_PAPER``: beta 0.5, i.e. new = (previous + mixed) / 2);
- ``@fedvssl-noswa``: alpha 0.9, beta 0 (no SWA step);
- ``@whole``: FedAvg with ``transport-scope = model`` (the SSL heads travel and are averaged too).

    python bench/bench_video_federated.py                       # the whole grid (about 15 min on 2 cores)
    BENCH_VIDEO_CELLS=simclr,centralized:simclr python bench/bench_video_federated.py
    BENCH_VIDEO_ROUNDS=6 BENCH_VIDEO_STEPS=10 BENCH_VIDEO_SEED=1 python bench/bench_video_federated.py
    python bench/bench_video_federated.py --summary            # mean over the seeds measured at 10x30

Writes ``bench/results/video_federated_<rounds>x<steps>_seed<seed>.json`` (cells already there are
kept) and the same name ``.md``.
With 120 query clips a figure is good to about +-4.5 points: most differences between cells here are
inside that.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import write_result  # noqa: E402
from fedssl.data.video_corpus import CorpusSpec, make_corpus  # noqa: E402
from launcher.flwr_cli import FEDVSSL_PAPER, VIDEO_RUN  # noqa: E402
from launcher.simulation import LocalSimulation  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NODES = 4
ROUNDS = int(os.environ.get("BENCH_VIDEO_ROUNDS", "10"))
STEPS = int(os.environ.get("BENCH_VIDEO_STEPS", "30"))
SEED = int(os.environ.get("BENCH_VIDEO_SEED", "0"))
NAME = f"video_federated_{ROUNDS}x{STEPS}_seed{SEED}"  # one result file per budget and seed
CONFIG = {**VIDEO_RUN, "seed": SEED, "num-rounds": ROUNDS, "fraction-train": 0.5, "min-train-nodes": 2,
          "train.max-steps": STEPS, "train.local-epochs": 100, "data.max-samples": 0,
          "eval.linear-labels": 320, "filter.probe-size": 64}
VARIANTS: dict[str, dict[str, Any]] = {
    "": {"aggregation.rule": "fedavg"},
    "fedvssl": dict(FEDVSSL_PAPER),
    "fedvssl-noswa": {**FEDVSSL_PAPER, "aggregation.beta": 0.0},
    "whole": {"aggregation.rule": "fedavg", "transport-scope": "model"},
}
DEFAULT_CELLS = ("simclr,centralized:simclr,simclr@whole,simclr@fedvssl,simclr@fedvssl-noswa,"
                 "playback-speed,centralized:playback-speed,catch-the-patch,centralized:catch-the-patch")
TASKS = ("video-motion", "video-object")


def scores(knn, top1, top5, linear) -> dict[str, dict[str, float]]:
    return {"knn": dict(knn), "top1": dict(top1), "top5": dict(top5), "linear": dict(linear)}


def centralized(method: str, corpus: Path) -> dict[str, Any]:
    """One model on the pooled train split, round by round: as many steps per round as a federation's
    2 cameras make (``bench.centralized``, the federation's schedule)."""
    from bench.centralized import equal_steps, train_centralized
    from fedssl.config import RunConfig
    from fedssl.modality import MODALITIES
    from fedssl.video.data import corpus_shard

    started = time.perf_counter()
    cfg = RunConfig.from_flat({**CONFIG, "ssl.method": method, "video.corpus-dir": str(corpus),
                               "data.partition": "iid"})
    model, results = train_centralized(cfg, corpus_shard(cfg, 0, 1), equal_steps(ROUNDS, 2, STEPS))
    modality = MODALITIES.get("video")
    probe = modality.probe(model.backbone, modality.load_tasks(cfg), cfg, True)
    return {"cell": f"centralized:{method}", "seconds": round(time.perf_counter() - started, 1),
            "steps": sum(r.steps for r in results), "loss": [r.loss for r in results], "schedule": "rounds",
            **scores(probe.knn, probe.knn_report, probe.retrieval_top5, probe.linear)}


def federated(sim: LocalSimulation, cell: str, corpus: Path) -> dict[str, Any]:
    method, _, variant = cell.partition("@")
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r} in {cell!r}; known: {sorted(v for v in VARIANTS if v)}")
    started = time.perf_counter()
    run_dir = sim.run({**CONFIG, **VARIANTS[variant], "ssl.method": method, "video.corpus-dir": str(corpus)},
                      nodes=NODES)
    if not variant:  # why federate: every camera alone, same rounds and steps (written into metrics.json)
        from fedssl.local_only import run as local_only

        local_only(run_dir, workers=2)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = metrics["rounds"][-1]
    return {"cell": cell, "seconds": round(time.perf_counter() - started, 1), "rounds": len(metrics["rounds"]),
            "loss": [r["loss"] for r in metrics["rounds"]],
            "excluded": sum(len(r.get("excluded", [])) for r in metrics["rounds"]),
            **scores(last["knn"], last["knn_report"], last.get("retrieval_top5", {}), last.get("linear", {})),
            "baselines": {name: scores(b["knn"], b.get("knn_report", {}), b.get("retrieval_top5", {}),
                                       b.get("linear", {}))
                          for name, b in metrics["baseline_probes"].items()}}


def _row(name: str, s: dict[str, dict[str, float]]) -> str:
    cells = [f"{s[m].get(t, float('nan')):.3f}" for t in TASKS for m in ("top1", "top5", "linear")]
    return f"| {name} | " + " | ".join(cells) + " |"


def render(cells: list[dict[str, Any]]) -> str:
    lines = ["# Federated video benchmark (issue 17, item 9)", "",
             f"{NODES} simulated cameras (3 motions each), {ROUNDS} rounds x {STEPS} local steps of 32 clips, "
             f"2 cameras per round, r3d-tiny, seed {SEED}; centralized: {ROUNDS * 2 * STEPS} steps on the pooled "
             "clips. "
             "Queries: 120 test clips (unseen garments), gallery: 320 train clips; +-4.5 points.",
             "", "| encoder | " + " | ".join(f"{t} {m}" for t in TASKS for m in ("top-1", "top-5", "linear")) + " |",
             "|---|" + "---:|" * 6]
    first = next((c for c in cells if "baselines" in c), None)
    if first is not None:
        for name in ("raw-pixels", "random-init", "random-init-bn"):
            if name in first["baselines"]:
                lines.append(_row(name, first["baselines"][name]))
    for c in cells:
        kind = "" if ":" in c["cell"] else "federated "
        lines.append(_row(kind + c["cell"], c))
        if "local-only" in c.get("baselines", {}):
            lines.append(_row(f"local-only {c['cell']}", c["baselines"]["local-only"]))
    lines += ["", f"Command: `BENCH_VIDEO_ROUNDS={ROUNDS} BENCH_VIDEO_STEPS={STEPS} BENCH_VIDEO_SEED={SEED} "
              "python bench/bench_video_federated.py` (BENCH_VIDEO_CELLS="
              + ",".join(c["cell"] for c in cells) + "); seconds per cell: "
              + ", ".join(f"{c['cell']} {c['seconds']}" for c in cells), ""]
    return "\n".join(lines)


def summary(rounds: int, steps: int) -> str:
    """Mean (min-max) over every seed measured at one budget: ``video_federated_<r>x<s>.md``."""
    import statistics

    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob(f"video_federated_{rounds}x{steps}_seed*.json"))]
    if not runs:
        raise SystemExit(f"no results for {rounds}x{steps} in {RESULTS}")
    rows: dict[str, list[dict[str, dict[str, float]]]] = {}
    for run in runs:
        base = next(c for c in run["cells"] if "baselines" in c)["baselines"]
        for name in ("raw-pixels", "random-init"):
            rows.setdefault(name, []).append(base[name])
        for c in run["cells"]:
            rows.setdefault(("" if ":" in c["cell"] else "federated ") + c["cell"], []).append(c)
            if "local-only" in c.get("baselines", {}):
                rows.setdefault(f"local-only {c['cell']}", []).append(c["baselines"]["local-only"])
    order = ["raw-pixels", "random-init"] + [name for cell in DEFAULT_CELLS.split(",") for name in (
        ("" if ":" in cell else "federated ") + cell, f"local-only {cell}")]
    rows = dict(sorted(rows.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    seeds = ", ".join(str(r["seed"]) for r in runs)
    lines = [f"# Federated video benchmark (issue 17, item 9): {rounds} rounds x {steps} steps, seeds {seeds}", "",
             f"Mean (min-max) over {len(runs)} seed(s); each seed's table is in video_federated_{rounds}x{steps}"
             "_seed<N>.md. Seeds change the model init, the devices' sampling and augmentation; the corpus and "
             "the probe split are the same.", "",
             "| encoder | " + " | ".join(f"{t} {m}" for t in TASKS for m in ("top-1", "top-5", "linear")) + " |",
             "|---|" + "---:|" * 6]
    for name, scored in rows.items():
        figures = []
        for t in TASKS:
            for m in ("top1", "top5", "linear"):
                values = [s[m][t] for s in scored if t in s.get(m, {})]
                figures.append(f"{statistics.mean(values):.3f} ({min(values):.2f}-{max(values):.2f})"
                               if values else "—")
        lines.append(f"| {name} | " + " | ".join(figures) + " |")
    text = "\n".join(lines) + "\n"
    (RESULTS / f"video_federated_{rounds}x{steps}.md").write_text(text)
    return text


def main() -> int:
    if "--summary" in sys.argv:
        print(summary(ROUNDS, STEPS))
        return 0
    wanted = [c for c in os.environ.get("BENCH_VIDEO_CELLS", DEFAULT_CELLS).split(",") if c]
    path = RESULTS / f"{NAME}.json"
    previous = json.loads(path.read_text())["cells"] if path.is_file() else []
    done: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(os.environ.get("BENCH_VIDEO_CORPUS", "") or Path(tmp) / "corpus")
        if not (corpus / "manifest.csv").is_file():
            make_corpus(corpus, CorpusSpec())
        with LocalSimulation(Path(tmp) / "sim") as sim:
            for cell in wanted:
                print(f"[bench_video_federated] {cell} ...", flush=True)
                done.append(centralized(cell.split(":", 1)[1], corpus) if cell.startswith("centralized:")
                            else federated(sim, cell, corpus))
                cells = [c for c in previous if c["cell"] not in wanted] + done  # saved after every cell
                write_result(path, {"config": CONFIG, "nodes": NODES, "rounds": ROUNDS, "steps": STEPS, "seed": SEED,
                                    "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                    "load_average": round(os.getloadavg()[0], 2), "cells": cells})
                (RESULTS / f"{NAME}.md").write_text(render(cells))
    print(render(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
