"""A real local deployment: one ``flower-superlink`` and N ``flower-supernode`` processes.

Everything listens on 127.0.0.1 with free ports, logs into ``workdir`` and is stopped (SIGTERM,
then SIGKILL after 15 s, by process group) when the context manager exits::

    with LocalDeployment(workdir, nodes=3) as fed:
        run_dir = fed.run({"num-rounds": 2})   # outputs/<run-id>, status finished:completed
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from launcher.flwr_cli import BIN, REPO, FlwrConnection, config_string, free_port, wait_for_port

CONNECTION = "fedssl-local"


def shard_configs(nodes: int) -> list[dict[str, Any]]:
    """Node configs of ``nodes`` SuperNodes that each train on one Fashion-MNIST shard."""
    return [{"partition-id": i, "num-partitions": nodes} for i in range(nodes)]


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the launcher dies, even of SIGKILL (Linux).

    Without it, a killed test run or launcher leaves a SuperLink and SuperNodes running (their own
    process groups keep them out of the terminal's signals) that load the CPU for the next runs.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class LocalDeployment(FlwrConnection):
    """SuperLink + SuperNodes on this machine, insecure (no TLS), in-memory SuperLink state.

    Args:
        workdir: logs (``superlink.log``, ``supernode-<i>.log``), ``flwr-home/`` and, by default, ``outputs/``.
        nodes: how many SuperNodes, each with a simulated shard (``partition-id``, ``num-partitions``);
            ignored when ``node_configs`` is given.
        node_configs: one node config per SuperNode (e.g. ``{"data-dir": "/data/camera"}`` for a
            device's own images, ``{"misbehave": "collapse"}`` for tests).
        app: the Flower app folder (its ``pyproject.toml``); this project by default.
        outputs: where the ServerApp writes ``<run-id>/`` (run config ``outputs-dir``).
        env: extra environment for every process (e.g. ``{"OMP_NUM_THREADS": "1"}``).
    """

    def __init__(self, workdir: Path, nodes: int = 3, node_configs: list[dict[str, Any]] | None = None,
                 app: Path = REPO, outputs: Path | None = None, env: dict[str, str] | None = None) -> None:
        super().__init__(workdir, CONNECTION, app, outputs)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.node_configs = node_configs if node_configs is not None else shard_configs(nodes)
        self.env.update(env or {})
        self.procs: list[subprocess.Popen] = []

    # --- lifecycle -----------------------------------------------------------
    def __enter__(self) -> LocalDeployment:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the SuperLink, wait for its port, start every SuperNode.

        Raises:
            TimeoutError: if the SuperLink does not listen within 60 s (everything started is stopped).
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_connection({"address": self.address, "insecure": True})
        # In-memory state: a SQLite file under ten SuperNodes pushing at once on a loaded 2-core
        # machine raised "database is locked" and lost replies (Flower 1.41).
        self._spawn("superlink", [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
                                  "--port", str(self.port)])
        if not wait_for_port(self.port):
            self.stop()
            raise TimeoutError(f"the SuperLink does not listen on {self.address}; see {self.workdir}/superlink.log")
        for i, node_config in enumerate(self.node_configs):
            self.add_node(node_config, name=f"supernode-{i}")

    def add_node(self, node_config: dict[str, Any], name: str) -> subprocess.Popen:
        """Start one more SuperNode (its own local port) with ``node_config``."""
        return self._spawn(name, [str(BIN / "flower-supernode"), "--insecure", "--superlink", self.address,
                                  "--port", str(free_port()), "--node-config", config_string(node_config)])

    def stop(self) -> None:
        """Stop every process this deployment started, SuperNodes first; idempotent."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        with open(self.workdir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=die_with_parent)
        self.procs.append(proc)
        return proc

    # --- what is connected -------------------------------------------------------
    def online_nodes(self) -> int:
        """SuperNodes the SuperLink lists as online (``flwr supernode ls``); 0 if it cannot say."""
        out = self.flwr("supernode", "ls", self.connection, "--format", "json")
        if out.returncode != 0 or not out.stdout.strip().startswith("{"):
            return 0
        nodes = json.loads(out.stdout).get("nodes", [])
        return sum(1 for n in nodes if str(n.get("status", "")).lower() == "online")

    def wait_for_nodes(self, timeout: float = 120) -> int:
        """Wait until every SuperNode is online; returns how many are.

        Raises:
            TimeoutError: naming how many connected, if not all did within ``timeout`` seconds.
        """
        deadline, online = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            online = self.online_nodes()
            if online >= len(self.node_configs):
                return online
            time.sleep(1)
        raise TimeoutError(f"{online} of {len(self.node_configs)} SuperNodes online after {timeout}s; "
                           f"see {self.workdir}/supernode-*.log")
