"""Print the outcome of the latest run from its ``metrics.json`` (exit 1 unless it completed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedssl.round_record import RoundRecord


def latest_run(outputs: Path, since: float = 0.0) -> Path | None:
    runs = [p.parent for p in outputs.glob("*/metrics.json") if p.stat().st_mtime >= since]
    return max(runs, key=lambda p: (p / "metrics.json").stat().st_mtime, default=None)


def summarize(metrics: dict) -> str:
    """The final round beside every baseline: kNN at the selection k, kNN at the report k, linear probe, and
    retrieval top-5 where the run scored it (video tasks)."""
    rounds = [RoundRecord.from_dict(r) for r in metrics["rounds"]]
    lines = [f"run {metrics['run_id']}: {metrics['status']}, {len(rounds)} rounds"]
    tasks = sorted({t for r in rounds for t in r.knn})
    config = metrics.get("config", {})
    k, report_k = config.get("eval.knn-k", "k"), config.get("eval.report-k", "k")
    final = rounds[-1] if rounds else RoundRecord(round=0, sampled=0, available=0)
    rows = [("federated", {"knn": final.knn, "knn_report": final.knn_report, "linear": final.linear,
                           "retrieval_top5": final.retrieval_top5})]
    probes = metrics.get("baseline_probes", {})
    rows += [(name, probes.get(name, {"knn": scores})) for name, scores in metrics["baselines"].items()]
    columns = [("knn", f"kNN@{k}"), ("knn_report", f"kNN@{report_k}"), ("linear", "linear")]
    if any(r.retrieval_top5 for r in rounds):
        columns.append(("retrieval_top5", "top-5"))
    for task in tasks:  # one block per probe task: rows are the encoder and its baselines
        lines.append(f"{task:<16}" + "".join(f"{label:>10}" for _, label in columns))
        for name, scores in rows:
            lines.append(f"  {name:<14}" + "".join(f"{scores.get(probe, {}).get(task, float('nan')):>10.4f}"
                                                   for probe, _ in columns))
    for task, best in metrics.get("best", {}).items():
        lines.append(f"best {task}: {best['score']:.4f} at round {best['round']} (best/{task}.pt)")
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
