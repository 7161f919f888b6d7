"""Run the benchmarks of issue #8 and render their tables: ``python -m bench.run [--quick] [--only NAME]``.

Each benchmark writes ``<results-dir>/<name>.json`` (envelope in ``bench/results.py``); then every
result file present is rendered into ``<results-dir>/RESULTS.md`` and PNG plots. A full run into the
default folder also refreshes the tables in ``bench/README.md``. Quick mode (CI smoke) runs every
benchmark at a tiny size into ``bench/results/quick/`` unless ``--results-dir`` says otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
import traceback
from pathlib import Path

from bench import render
from bench.machine import describe
from bench.results import read_result, validate, write_result

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_RESULTS = BENCH_DIR / "results"
BENCHMARKS = {  # name -> module, in the order
    "client_overhead": "bench.bench_client_overhead",
    "client_speed": "bench.bench_client_speed",
    "round_overhead": "bench.bench_round_overhead",
    "round_overhead_demo": "bench.bench_round_overhead_demo",
    "communication": "bench.bench_communication",
    "aggregation": "bench.bench_aggregation",
    "streaming": "bench.bench_streaming",
    "export_suite": "bench.export_suite",  # runs bench/bench_export.py; its own export.json stays its own
    "quality": "bench.bench_quality",
    "quality_budget": "bench.bench_quality_budget",
    "attacks": "bench.bench_attacks",
}
NEEDS = {"export_suite": "bench.bench_export"}  # written by another engineer: called, never rewritten here


def available(name: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in (BENCHMARKS[name], NEEDS.get(name, BENCHMARKS[name])))


def result_keys(name: str) -> tuple[str, ...]:
    """The keys a benchmark promises under ``results`` (none known for a missing module)."""
    if not available(name):
        return ()
    return tuple(getattr(importlib.import_module(BENCHMARKS[name]), "RESULT_KEYS", ()))


def run_one(name: str, quick: bool, results_dir: Path) -> Path:
    """Run one benchmark and write its JSON; returns the file.

    Raises:
        ModuleNotFoundError: if the benchmark's module does not exist (yet).
        ValueError: if the file it produced is not well-formed.
    """
    path = results_dir / f"{name}.json"
    module = importlib.import_module(BENCHMARKS[name])
    machine, started = describe(), time.perf_counter()
    body = module.run(quick)
    write_result(path, {"benchmark": name, "quick": quick, "machine": machine, "seconds": time.perf_counter() - started,
                        "load_avg_end": round(os.getloadavg()[0], 2), **body})
    problems = validate(read_result(path), result_keys(name))
    if problems:
        raise ValueError(f"{path} is not well-formed: {problems}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI smoke size: every benchmark, a few minutes")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only this one (repeatable)")
    parser.add_argument("--results-dir", type=Path, help="where the JSON, RESULTS.md and PNGs go")
    parser.add_argument("--render-only", action="store_true", help="re-render the tables from existing JSON")
    args = parser.parse_args(argv)
    results_dir = args.results_dir or (DEFAULT_RESULTS / "quick" if args.quick else DEFAULT_RESULTS)
    results_dir.mkdir(parents=True, exist_ok=True)
    failed: dict[str, str] = {}
    if not args.render_only:
        for name in args.only or list(BENCHMARKS):
            if not available(name):
                failed[name] = f"{NEEDS.get(name, BENCHMARKS[name])} does not exist yet"
                print(f"[bench] {name}: SKIPPED, {failed[name]}", flush=True)
                continue
            print(f"[bench] {name}: running ({'quick' if args.quick else 'full'})", flush=True)
            started = time.perf_counter()
            try:
                path = run_one(name, args.quick, results_dir)
                print(f"[bench] {name}: wrote {path} in {time.perf_counter() - started:.0f} s", flush=True)
            except Exception as exc:  # one broken benchmark must not hide the others' results
                traceback.print_exc()
                failed[name] = f"{type(exc).__name__}: {exc}"
                print(f"[bench] {name}: FAILED ({failed[name][:300]})", flush=True)
    report = render.render_all(results_dir, {n: f for n, f in failed.items()}, list(BENCHMARKS))
    print(f"[bench] tables: {report}", flush=True)
    if results_dir.resolve() == DEFAULT_RESULTS.resolve():
        render.update_readme(BENCH_DIR / "README.md", results_dir, list(BENCHMARKS))
        render.update_readme(BENCH_DIR.parent / "README.md", results_dir, list(BENCHMARKS), goals_only=True)
    gaps = {n for n in failed if n in NEEDS and not available(n)}  # another engineer's part, not there yet
    return 0 if set(failed) <= gaps else 1


if __name__ == "__main__":
    sys.exit(main())
