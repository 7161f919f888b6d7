"""Issue #3's figure: does the collapse filter protect the global model from collapsed clients?

Three real federations (flower-superlink + 10 flower-supernode processes, `flwr run`):
clean; 2 of 10 clients collapsed with the filter on; the same with the filter off.
Writes bench/results/collapse_filter.json and prints a Markdown table.
Usage: .venv/bin/python scripts/collapse_filter_experiment.py [--rounds 3] [--max-samples 1500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fedssl.round_record import read_metrics
from launcher.deployment import LocalDeployment
from launcher.flwr_cli import REPO

NODES = 10
COLLAPSED = (3, 7)


def run(name: str, collapsed: tuple[int, ...], filter_on: bool, run_config: dict) -> dict:
    nodes = [{"partition-id": i, "num-partitions": NODES, **({"misbehave": "collapse"} if i in collapsed else {})}
             for i in range(NODES)]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, LocalDeployment(Path(tmp), node_configs=nodes) as fed:
        # "Off" switches off the collapse filter and the norm-outlier check (which would otherwise catch
        # a collapsed encoder's large constant output); key/shape/NaN validation always stays on.
        screening = {} if filter_on else {"filter.enabled": False, "filter.max-norm-ratio": 1e9}
        run_dir = fed.run({**run_config, **screening}, timeout=3600)
        metrics, rounds = read_metrics(run_dir)
    return {
        "name": name, "collapsed_partitions": list(collapsed), "filter": filter_on,
        "knn_fashion_mnist": rounds[-1].knn["fashion-mnist"],
        "knn_per_round": [r.knn["fashion-mnist"] for r in rounds],
        "excluded_per_round": [sorted((int(e.partition_id), e.reason) for e in r.excluded) for r in rounds],
        "baselines": metrics["baselines"], "wall_seconds": time.monotonic() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-samples", type=int, default=1500)
    args = parser.parse_args()
    run_config = {"num-rounds": args.rounds, "data.max-samples": args.max_samples, "eval.tasks": "fashion-mnist",
                  "eval.gallery-size": 10000, "eval.query-size": 2000, "round-timeout": 600.0}
    results = [
        run("clean", (), True, run_config),
        run("2/10 collapsed, filter on", COLLAPSED, True, run_config),
        run("2/10 collapsed, filter off", COLLAPSED, False, run_config),
    ]
    out = REPO / "bench" / "results" / "collapse_filter.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run_config": run_config, "nodes": NODES, "results": results}, indent=2))
    print("| federation | kNN top-1 (Fashion-MNIST) | excluded per round |\n|---|---|---|")
    for r in results:
        excluded = "; ".join(",".join(f"p{p}:{why}" for p, why in rnd) or "none" for rnd in r["excluded_per_round"])
        print(f"| {r['name']} | {r['knn_fashion_mnist']:.4f} | {excluded} |")


if __name__ == "__main__":
    main()
