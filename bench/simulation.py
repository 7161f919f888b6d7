"""``flwr run .`` with Flower's local simulation runtime, on private ports, stopped afterwards.

``flwr run`` starts a background ``flower-superlink --simulation`` for the ``:local-in-memory:`` connection and
leaves it running. Here it gets a private ``FLWR_HOME`` and its own HTTP and Control API ports
(``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`` / ``FLWR_LOCAL_CONTROL_API_PORT``), so it never meets a
SuperLink someone else started; on exit exactly the processes listening on those ports' command
lines are stopped, by PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))
from federation import flower_env, free_port, submit_run, toml_value  # noqa: E402  (tests/federation.py)


def _pids_with(needle: str) -> list[int]:
    """PIDs whose command line contains ``needle`` (read from /proc, no pattern kill)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids


class LocalSimulation:
    """``with LocalSimulation(tmp) as sim: run_dir = sim.run({...}, nodes=10)``; runs share one SuperLink."""

    def __init__(self, workdir: Path, cpus_per_client: float = 1.0) -> None:
        self.workdir = Path(workdir)
        self.home = self.workdir / "flwr-home"
        self.outputs = self.workdir / "outputs"
        self.cpus_per_client = cpus_per_client
        self.http_port, self.control_port = free_port(), free_port()
        self.env = {**flower_env(self.home), "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.http_port),
                    "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port)}

    def __enter__(self) -> LocalSimulation:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text('[superlink]\ndefault = "local"\n\n'
                                               '[superlink.local]\naddress = ":local-in-memory:"\n')
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the SuperLink ``flwr run`` started for us (and its simulation child, if still alive)."""
        mine = _pids_with(f"--control-api-address 127.0.0.1:{self.control_port}")
        mine += _pids_with(f"--runtime-api-address 127.0.0.1:{self.http_port}")
        for pid in mine:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and _alive(p) for p in mine):
            time.sleep(0.2)
        for pid in mine:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    # --- runs ------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def submit(self, run_config: dict[str, Any], nodes: int) -> int:
        config = " ".join(f"{k}={toml_value(v)}" for k, v in {"outputs-dir": str(self.outputs), **run_config}.items())
        federation = f"num-supernodes={nodes} client-resources-num-cpus={self.cpus_per_client:g}"
        return submit_run(self.flwr, str(REPO), "local", "--run-config", config, "--federation-config", federation)

    def status(self, run_id: int) -> str:
        out = self.flwr("ls", "local", "--run-id", str(run_id), "--format", "json")
        runs = json.loads(out.stdout).get("runs", []) if out.returncode == 0 else []
        return runs[0].get("status", "") if runs else ""

    def run(self, run_config: dict[str, Any], nodes: int, timeout: float = 1800) -> Path:
        """Submit, wait, insist on ``finished:completed``; returns ``outputs/<run-id>``.

        Raises:
            RuntimeError: if the run did not complete (the SuperLink's log tail is in the message).
            TimeoutError: if it is still running after ``timeout`` seconds.
        """
        run_id = self.submit(run_config, nodes)
        deadline, status = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status.startswith("finished"):
                break
            time.sleep(2)
        else:
            raise TimeoutError(f"run {run_id} not finished after {timeout}s (last status {status!r})")
        if status != "finished:completed":
            log = self.home / "local-superlink" / "superlink.log"
            tail = log.read_text(errors="replace")[-4000:] if log.is_file() else "(no log)"
            raise RuntimeError(f"run {run_id} ended {status!r}\n{tail}")
        return self.outputs / str(run_id)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def load_metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())
