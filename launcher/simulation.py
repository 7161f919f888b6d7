"""``flwr run`` with Flower's local simulation runtime, on private ports, stopped afterwards.

``flwr run`` starts a background ``flower-superlink --simulation`` for a ``:local-in-memory:``
connection and leaves it running. Here it gets a private ``FLWR_HOME`` and its own HTTP and Control
API ports (``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT`` / ``FLWR_LOCAL_CONTROL_API_PORT``), so it never
meets a SuperLink someone else started; on exit exactly the processes whose command lines name those
ports are stopped, by PID::

    with LocalSimulation(workdir) as sim:
        run_dir = sim.run({"num-rounds": 2}, nodes=10)   # runs share one SuperLink
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from launcher.flwr_cli import REPO, FlwrConnection, free_port

CONNECTION = "local"


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


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


class LocalSimulation(FlwrConnection):
    """Flower's simulation runtime behind ``flwr run``; each run says how many SuperNodes it simulates.

    Args:
        workdir: ``flwr-home/`` (the SuperLink's log is under it) and, by default, ``outputs/``.
        cpus_per_client: Ray's ``client-resources-num-cpus`` (1: as many clients at once as cores).
    """

    def __init__(self, workdir: Path, cpus_per_client: float = 1.0, app: Path = REPO,
                 outputs: Path | None = None) -> None:
        super().__init__(workdir, CONNECTION, app, outputs)
        self.cpus_per_client = cpus_per_client
        self.http_port, self.control_port = free_port(), free_port()
        self.env.update({"FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.http_port),
                         "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port)})

    def __enter__(self) -> LocalSimulation:
        self.write_connection({"address": ":local-in-memory:"})
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
        while time.monotonic() < deadline and any(_alive(p) for p in mine):
            time.sleep(0.2)
        for pid in mine:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    def run(self, run_config: dict[str, Any], nodes: int, timeout: float = 1800) -> Path:  # type: ignore[override]
        """Simulate ``nodes`` SuperNodes for one run; see :meth:`FlwrConnection.run`."""
        federation = f"num-supernodes={nodes} client-resources-num-cpus={self.cpus_per_client:g}"
        return super().run(run_config, "--federation-config", federation, timeout=timeout)
