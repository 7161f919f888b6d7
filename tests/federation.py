"""A real local Flower deployment for tests: ``flower-superlink`` + N ``flower-supernode`` processes.

Everything listens on 127.0.0.1 with free ports, lives in a temporary folder,
and is killed when the context manager exits. Runs are submitted with the real
``flwr run`` CLI and their final status is read back with ``flwr ls``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CONNECTION = "fedssl-test"
TINY_RUN = {  # a run that proves the plumbing in seconds, not a quality run
    "num-rounds": 2, "data.max-samples": 256, "train.batch-size": 64,
    "eval.gallery-size": 1000, "eval.query-size": 300, "eval.tasks": "fashion-mnist",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_env(home: Path) -> dict[str, str]:
    # Flower launches flower-superlink, flwr-serverapp and flwr-clientapp from PATH.
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}


def submit_run(flwr: Any, *args: str, attempts: int = 3) -> int:
    """``flwr run ... --format json`` -> run id, retried: on a loaded machine the SuperLink it talks
    to (or the local one ``flwr run`` starts) can be too slow to answer the first time.

    Raises:
        RuntimeError: with flwr's output when every attempt failed.
    """
    for attempt in range(1, attempts + 1):
        out = flwr("run", *args, "--format", "json")
        reply = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
        if out.returncode == 0 and "run-id" in reply:
            return int(reply["run-id"])
        if attempt < attempts:
            time.sleep(5 * attempt)
    raise RuntimeError(f"flwr run failed {attempts} times; last output:\n{out.stdout}\n{out.stderr}")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value) + "'"


class LocalDeployment:
    """Start with ``with LocalDeployment(tmp, nodes=3) as fed: run_dir = fed.run({...})``."""

    def __init__(self, workdir: Path, nodes: int = 3, node_configs: list[dict[str, Any]] | None = None) -> None:
        self.workdir = Path(workdir)
        self.home = self.workdir / "flwr-home"
        self.outputs = self.workdir / "outputs"
        self.port = free_port()
        self.node_configs = node_configs or [{"partition-id": i, "num-partitions": nodes} for i in range(nodes)]
        self.procs: list[subprocess.Popen] = []
        self.env = flower_env(self.home)

    # --- lifecycle -----------------------------------------------------------
    def __enter__(self) -> LocalDeployment:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        # In-memory state: a SQLite file under ten SuperNodes pushing at once on a loaded 2-core
        # machine raised "database is locked" and lost replies (Flower 1.41).
        self._spawn("superlink", [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
                                  "--port", str(self.port)])
        self._wait_for_port(self.port)
        for i, node_config in enumerate(self.node_configs):
            self.add_node(node_config, name=f"supernode-{i}")
        return self

    def add_node(self, node_config: dict[str, Any], name: str) -> subprocess.Popen:
        config = " ".join(f"{k}={toml_value(v)}" for k, v in node_config.items())
        return self._spawn(name, [str(BIN / "flower-supernode"), "--insecure", "--superlink",
                                  f"127.0.0.1:{self.port}", "--port", str(free_port()), "--node-config", config])

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def _wait_for_port(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s; see {self.workdir}/*.log")

    # --- runs ------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def submit(self, run_config: dict[str, Any]) -> int:
        """Start a run without waiting; returns its run id."""
        config = {"outputs-dir": str(self.outputs), **run_config}
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in config.items())
        return submit_run(self.flwr, str(REPO), CONNECTION, "--run-config", overrides)

    def status(self, run_id: int) -> str:
        out = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        runs = json.loads(out.stdout).get("runs", []) if out.returncode == 0 else []
        return runs[0].get("status", "") if runs else ""

    def wait(self, run_id: int, timeout: float = 600) -> str:
        """Poll until the run is finished; returns Flower's status (e.g. ``finished:completed``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status.startswith("finished"):
                return status
            time.sleep(2)
        raise TimeoutError(f"run {run_id} not finished after {timeout}s (last status {status!r})")

    def run(self, run_config: dict[str, Any], timeout: float = 600) -> Path:
        """Submit, wait, insist on ``finished:completed``; returns ``outputs/<run-id>``."""
        run_id = self.submit(run_config)
        status = self.wait(run_id, timeout)
        if status != "finished:completed":
            raise RuntimeError(f"run {run_id} ended {status!r}; logs in {self.workdir}\n{self.logs()}")
        return self.outputs / str(run_id)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.workdir.glob("*.log")))
