#!/usr/bin/env python3
"""`fedssl-supervise`: resume a run that failed after a checkpoint, without a person.

The `supervisor` service of docker/compose.yaml (and k8s/base/supervisor-deployment.yaml).
Every ``--interval`` seconds it reads each ``<outputs>/<folder>/metrics.json`` whose status is
still ``running`` and asks the SuperLink (``fedssl-flwr ls``) about the Flower run that last
worked on it (the newest entry of ``events``). When that run is over without completing
(``finished:failed``, e.g. its ServerApp was killed or the SuperLink was down past Flower's
heartbeat limit) or the SuperLink no longer knows it, and ``metrics.json`` has not changed for
``--grace`` seconds (no ServerApp still writes), it

1. notes ``failed`` in ``metrics.json`` (``status`` and ``events``),
2. submits the same app with the run's own config plus ``resume='<folder>'``,
3. notes ``resubmitted`` with the new Flower run id; the new ServerApp notes ``resumed``.

A run stopped on purpose (``finished:stopped``) is left alone. A folder without a checkpoint
(failed before round 1) cannot be resumed and is reported once. After ``--max-resumes`` resumes
that made no progress the supervisor gives up on that folder (status ``failed``) and says why.
A SuperLink that does not answer is retried on the next pass.

    fedssl-supervise /outputs --app /app --interval 10 --grace 30 [--alive /tmp/supervisor.alive]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINT, METRICS = "checkpoint.pt", "metrics.json"
OVER = {"finished:failed", ""}  # "" = the SuperLink does not know the run (its state was lost)
LEFT_ALONE = {"finished:stopped", "finished:completed"}


@dataclass(frozen=True)
class Decision:
    """What to do with one run folder on this pass."""

    action: str  # "resume", "wait", "give-up" or "skip"
    reason: str
    flower_run_id: int = 0
    round: int = 0


def last_round(metrics: dict[str, Any]) -> int:
    rounds = metrics.get("rounds") or []
    return int(rounds[-1]["round"]) if rounds else 0


def decide(folder: Path, metrics: dict[str, Any], flower_status: dict[int, str], now: float,
           grace_s: float, max_resumes: int) -> Decision:
    """The pure policy: resume, wait, give up or skip ``folder`` given Flower's view of its runs."""
    if metrics.get("status") != "running" or not metrics.get("events"):
        return Decision("skip", f"status {metrics.get('status')!r}")
    current = int(metrics["events"][-1]["flower_run_id"])
    status = flower_status.get(current, "")
    done = last_round(metrics)
    if status not in OVER:
        return Decision("skip" if status in LEFT_ALONE else "wait", f"run {current} is {status}", current, done)
    if not (folder / CHECKPOINT).is_file():
        return Decision("skip", f"run {current} is {status or 'unknown'} before its first checkpoint", current)
    quiet = now - (folder / METRICS).stat().st_mtime
    if quiet < grace_s:
        return Decision("wait", f"run {current} is {status or 'unknown'}; metrics.json changed {quiet:.0f}s ago",
                        current, done)
    fruitless = sum(e["status"] == "resubmitted" and e.get("round") == done for e in metrics["events"])
    if fruitless >= max_resumes:
        return Decision("give-up", f"{fruitless} resumes after round {done} made no progress", current, done)
    return Decision("resume", f"run {current} is {status or 'unknown to the SuperLink'}", current, done)


def toml_value(value: Any) -> str:
    """A run-config override value as `flwr run --run-config` parses it (TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


def resume_overrides(folder: Path, metrics: dict[str, Any]) -> str:
    """The run's own config (as the ServerApp recorded it) with ``resume`` set to its folder."""
    config = {**metrics.get("config", {}), "resume": folder.name}
    return " ".join(f"{key}={toml_value(value)}" for key, value in config.items())


def write_metrics(folder: Path, metrics: dict[str, Any]) -> None:
    tmp = folder / f".{METRICS}.supervisor"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(folder / METRICS)


def note(folder: Path, metrics: dict[str, Any], status: str, flower_run_id: int, round: int, **extra: Any) -> None:
    metrics.setdefault("events", []).append({"status": status, "at": time.time(), "flower_run_id": flower_run_id,
                                             "round": round, **extra})
    write_metrics(folder, metrics)


# --- the SuperLink, through the flwr CLI -------------------------------------------------------------
def flwr_json(args: list[str], timeout: float = 120) -> dict[str, Any]:
    """``fedssl-flwr ARGS --format json`` parsed; raises RuntimeError when the CLI fails."""
    out = subprocess.run(["fedssl-flwr", *args, "--format", "json"], capture_output=True, text=True,
                         timeout=timeout)
    text = out.stdout[out.stdout.find("{"):] if "{" in out.stdout else ""
    try:
        answer = json.loads(text)
    except ValueError:
        answer = {}
    if out.returncode != 0 or not answer.get("success", True):
        raise RuntimeError(f"flwr {' '.join(args)}: {(out.stdout + out.stderr).strip()[-400:]}")
    return answer


def flower_statuses() -> dict[int, str]:
    return {int(r["run-id"]): str(r.get("status", "")) for r in flwr_json(["ls", "fedssl"]).get("runs", [])}


def submit(app: str, overrides: str) -> int:
    return int(flwr_json(["run", app, "fedssl", "--run-config", overrides], timeout=600)["run-id"])


# --- the loop ------------------------------------------------------------------------------------------
def supervise_once(outputs: Path, app: str, grace_s: float, max_resumes: int,
                   statuses: Callable[[], dict[int, str]] = flower_statuses,
                   resubmit: Callable[[str, str], int] = submit, say: Callable[[str], None] = print) -> list[int]:
    """One pass over ``outputs``; returns the Flower run ids submitted."""
    running = {}
    for path in sorted(outputs.glob(f"*/{METRICS}")):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written, or not ours
        if isinstance(metrics, dict) and metrics.get("status") == "running":
            running[path.parent] = metrics
    if not running:
        return []
    flower = statuses()
    submitted = []
    for folder, metrics in running.items():
        decision = decide(folder, metrics, flower, time.time(), grace_s, max_resumes)
        if decision.action in ("skip", "wait"):
            continue
        if decision.action == "give-up":
            metrics["status"] = "failed"
            note(folder, metrics, "failed", decision.flower_run_id, decision.round, reason=decision.reason)
            say(f"supervisor: {folder.name}: giving up: {decision.reason}")
            continue
        new_run = resubmit(app, resume_overrides(folder, metrics))  # raises if the SuperLink refuses: retried
        note(folder, metrics, "failed", decision.flower_run_id, decision.round, reason=decision.reason)
        note(folder, metrics, "resubmitted", new_run, decision.round)
        say(f"supervisor: {folder.name}: {decision.reason}; resumed after round {decision.round} as run {new_run}")
        submitted.append(new_run)
    return submitted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs", type=Path, help="the ServerApp's outputs-dir, as mounted here")
    parser.add_argument("--app", default=os.environ.get("FEDSSL_APP", "/app"), help="the app folder to submit")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between passes")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds metrics.json must be quiet first")
    parser.add_argument("--max-resumes", type=int, default=3, help="resumes without progress before giving up")
    parser.add_argument("--alive", type=Path, help="file touched after every pass (a liveness probe reads it)")
    args = parser.parse_args()
    if args.interval <= 0 or args.grace < 0 or args.max_resumes < 1:
        parser.error("--interval must be > 0, --grace >= 0 and --max-resumes >= 1")
    if not args.outputs.is_dir():
        parser.error(f"outputs folder {args.outputs} does not exist")
    print(f"supervisor: watching {args.outputs} every {args.interval:g}s (app {args.app})", flush=True)
    while True:
        try:
            supervise_once(args.outputs, args.app, args.grace, args.max_resumes,
                           say=lambda line: print(line, flush=True))
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
            print(f"supervisor: this pass failed, retrying: {exc}", file=sys.stderr, flush=True)
        if args.alive is not None:
            args.alive.touch()
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
