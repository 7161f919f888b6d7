"""Print the outcome of the latest run from its ``metrics.json`` (exit 1 unless it completed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def latest_run(outputs: Path, since: float = 0.0) -> Path | None:
    runs = [p.parent for p in outputs.glob("*/metrics.json") if p.stat().st_mtime >= since]
    return max(runs, key=lambda p: (p / "metrics.json").stat().st_mtime, default=None)


def summarize(metrics: dict) -> str:
    lines = [f"run {metrics['run_id']}: {metrics['status']}, {len(metrics['rounds'])} rounds"]
    tasks = sorted({t for r in metrics["rounds"] for t in r.get("knn", {})})
    final = metrics["rounds"][-1]["knn"] if metrics["rounds"] else {}
    lines.append(f"{'kNN top-1':<14}" + "".join(f"{t:>16}" for t in tasks))
    rows = [("federated", final), *metrics["baselines"].items()]
    for name, scores in rows:
        lines.append(f"{name:<14}" + "".join(f"{scores.get(t, float('nan')):>16.4f}" for t in tasks))
    for task, best in metrics.get("best", {}).items():
        lines.append(f"best {task}: {best['score']:.4f} at round {best['round']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("outputs", type=Path)
    parser.add_argument("--since", type=float, default=0.0, help="only runs written after this epoch time")
    args = parser.parse_args(argv)
    run = latest_run(args.outputs, args.since)
    if run is None:
        print(f"no run wrote {args.outputs}/<run-id>/metrics.json; see the log above", file=sys.stderr)
        return 1
    metrics = json.loads((run / "metrics.json").read_text())
    print(summarize(metrics))
    print(f"outputs: {run}")
    return 0 if metrics["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
