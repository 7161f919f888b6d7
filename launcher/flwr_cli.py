"""The ``flwr`` CLI seen from Python: a private FLWR_HOME, run-config strings, submit, status, wait.

Shared by both launchers (:mod:`launcher.deployment`, :mod:`launcher.simulation`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent  # flwr, flower-superlink, flower-supernode of this environment
REPO = Path(__file__).resolve().parents[1]
# A run that proves the plumbing in seconds, not a quality run.
TINY_RUN: dict[str, Any] = {  # every node trains every round, so tests can name who did what
    "num-rounds": 2, "fraction-train": 1.0, "data.max-samples": 256, "train.batch-size": 64,
    "eval.gallery-size": 1000, "eval.query-size": 300, "eval.tasks": "fashion-mnist",
}
AUDIO_RUN: dict[str, Any] = {  # data.modality = "audio": its tasks and the block3 embedding of a 40x51 log-mel map
    "data.modality": "audio", "eval.tasks": "speech-words,sound-pitch,sound-timbre", "model.embedding-dim": 3840,
    "train.batch-size": 64, "data.max-samples": 1024,
    # RankMe is at most the number of clips checked: 0.02 x 3840 = 77 would reject a device with few recordings
    "filter.min-rankme-ratio": 0.005,
}
TINY_AUDIO_RUN: dict[str, Any] = {  # seconds per round on 2 cores; add "audio.corpus-dir"
    **AUDIO_RUN, "num-rounds": 2, "fraction-train": 1.0, "data.max-samples": 64, "train.batch-size": 32,
    "train.max-steps": 2, "eval.gallery-size": 200, "eval.query-size": 100, "eval.linear-labels": 100,
    # A small device state (heads + Adam moments ~10 MB instead of ~50 MB): on a loaded machine Flower's
    # ClientApp can miss its 30 s limit pushing a large context, and the expired task then fails the
    # node's next reply ("ClientApp stopped responding"); see docs/audio.md.
    "ssl.hidden-dim": 256, "train.keep-optimizer-state": False,
}


VIDEO_RUN: dict[str, Any] = {  # data.modality = "video": its tasks, the r3d-tiny embedding, no channels-last for 3D
    "data.modality": "video", "eval.tasks": "video-motion,video-object", "model.readout": "pool",
    "model.embedding-dim": 80, "train.channels-last": False, "train.batch-size": 32, "data.max-samples": 512,
    "data.partition": "classes-per-client", "data.classes-per-client": 3,  # a few motions per device
    "eval.knn-k": 10, "eval.report-k": 1,  # a gallery of hundreds of clips, not 10k images: top-1 retrieval beside
    "filter.min-rankme-ratio": 0.005,  # an 80-d embedding of a few clips: RankMe is capped by the clip count
}
# FedVSSL's paper setting: alpha = 0.9 and its SWA step new = (previous + mixed) / 2, i.e. our beta = 0.5
# (docs/video.md, "FedVSSL's aggregation"); add to any run config.
FEDVSSL_PAPER: dict[str, Any] = {"aggregation.rule": "fedvssl", "aggregation.alpha": 0.9, "aggregation.beta": 0.5}
TINY_VIDEO_RUN: dict[str, Any] = {  # seconds per round on 2 cores; add "video.corpus-dir"
    **VIDEO_RUN, "num-rounds": 2, "fraction-train": 1.0, "data.max-samples": 32, "train.batch-size": 8,
    "train.max-steps": 2, "eval.gallery-size": 100, "eval.query-size": 60, "eval.linear-labels": 60,
    "ssl.hidden-dim": 128, "ssl.proj-dim": 64, "train.keep-optimizer-state": False, "filter.probe-size": 32,
}


_ITEM = re.compile(r"""(?P<key>[^\s=]+)=(?P<value>'[^']*'|"[^"]*"|[^\s'"]+)""")  # key=value, the value maybe quoted


SLOW_POLL_S = 10.0  # seconds between `flwr ls` while a run is going
FAST_POLL_S = 1.0  # ... once its metrics.json says it has ended


def free_port() -> int:
    """A TCP port that nothing listens on right now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0) -> bool:
    """True once something accepts connections on 127.0.0.1:``port``; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def flower_env(home: Path) -> dict[str, str]:
    """This environment for Flower's processes: its binaries first on PATH, a private FLWR_HOME.

    Flower launches flower-superlink, flwr-serverapp and flwr-clientapp from PATH. It would also
    install the app's dependencies with uv (which would pull CUDA torch), phone home and check
    for updates: all three are switched off.
    """
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "FLWR_HOME": str(home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}


def toml_value(value: Any) -> str:
    """One value as Flower's ``--run-config``/``--node-config`` strings spell it (TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value) + "'"


def config_string(config: dict[str, Any]) -> str:
    """``{"num-rounds": 2, "ssl.method": "byol"}`` -> ``num-rounds=2 ssl.method='byol'``."""
    return " ".join(f"{k}={toml_value(v)}" for k, v in config.items())


def parse_config(text: str) -> dict[str, Any]:
    """The inverse of :func:`config_string`: ``"partition-id=0 data-dir='/data/a b'"`` -> a dict.

    Values are TOML (numbers, booleans, quoted strings); a bare word is taken as a string.
    Raises:
        ValueError: for an item without ``=``.
    """
    leftover = _ITEM.sub("", text).strip()
    if leftover:
        raise ValueError(f"config item {leftover!r} is not key=value (in {text!r})")
    return {item["key"]: _value(item["value"]) for item in _ITEM.finditer(text)}


def _value(raw: str) -> Any:
    """A TOML scalar as Flower's config strings hold it: quoted string, boolean, integer or float."""
    if raw[0] in "'\"":
        return raw[1:-1]
    if raw in ("true", "false"):
        return raw == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


class FlwrConnection:
    """A named connection in a private FLWR_HOME under ``workdir``, driven with the ``flwr`` CLI.

    Subclasses start what the connection points at and write ``config.toml`` (:meth:`write_connection`).
    """

    def __init__(self, workdir: Path, connection: str, app: Path = REPO, outputs: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.home = self.workdir / "flwr-home"
        self.outputs = Path(outputs) if outputs is not None else self.workdir / "outputs"
        self.connection = connection
        self.app = Path(app)
        self.env = flower_env(self.home)

    def write_connection(self, table: dict[str, Any]) -> None:
        """``$FLWR_HOME/config.toml`` with this connection as the default."""
        self.home.mkdir(parents=True, exist_ok=True)
        body = "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())
        (self.home / "config.toml").write_text(f'[superlink]\ndefault = "{self.connection}"\n\n'
                                               f"[superlink.{self.connection}]\n{body}")

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], cwd=self.app, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def submit(self, run_config: dict[str, Any], *extra: str, attempts: int = 3) -> int:
        """``flwr run <app> <connection> --run-config ...`` -> the run id, without waiting for the run.

        ``outputs-dir`` defaults to this launcher's outputs folder. Retried: on a loaded machine the
        SuperLink can be too slow to answer the first time.
        Raises:
            RuntimeError: with flwr's output when every attempt failed.
        """
        overrides = config_string({"outputs-dir": str(self.outputs.resolve()), **run_config})
        out = None
        for attempt in range(1, attempts + 1):
            out = self.flwr("run", str(self.app), self.connection, "--run-config", overrides, *extra,
                            "--format", "json")
            reply = json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}
            if out.returncode == 0 and "run-id" in reply:
                return int(reply["run-id"])
            if attempt < attempts:
                time.sleep(5 * attempt)
        raise RuntimeError(f"flwr run failed {attempts} times; last output:\n{out.stdout}\n{out.stderr}")

    def status(self, run_id: int) -> str:
        """Flower's status of a run (e.g. ``running``, ``finished:completed``); "" if unknown."""
        out = self.flwr("ls", self.connection, "--run-id", str(run_id), "--format", "json")
        runs = json.loads(out.stdout).get("runs", []) if out.returncode == 0 and out.stdout.strip() else []
        return runs[0].get("status", "") if runs else ""

    def wait(self, run_id: int, timeout: float = 600) -> str:
        """Poll until the run is finished; returns its status (``flwr run --stream`` exits 0 even on failure).

        Each ``flwr ls`` is a new Python process (about 2 s of CPU here), so Flower is asked every
        ``SLOW_POLL_S`` only, and every ``FAST_POLL_S`` once the run's own metrics.json says it ended
        (the ServerApp writes that just before it exits); a crashed run is still seen by the slow poll.

        Raises:
            TimeoutError: if it is still running after ``timeout`` seconds.
        """
        deadline, status, asked = time.monotonic() + timeout, "", -float("inf")
        while time.monotonic() < deadline:
            interval = FAST_POLL_S if self.outputs_say_ended(run_id) else SLOW_POLL_S
            if time.monotonic() - asked >= interval:
                status, asked = self.status(run_id), time.monotonic()
                if status.startswith("finished"):
                    return status
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} not finished after {timeout}s (last status {status!r})")

    def outputs_say_ended(self, run_id: int) -> bool:
        """Whether a metrics.json under the outputs folder says Flower run ``run_id`` completed or failed."""
        for path in self.outputs.glob("*/metrics.json"):
            try:
                metrics = json.loads(path.read_text())
            except (OSError, ValueError):  # being replaced right now: look again next time
                continue
            events = metrics.get("events") or [{}]
            if metrics.get("status") in ("completed", "failed") and events[-1].get("flower_run_id") == run_id:
                return True
        return False

    def run(self, run_config: dict[str, Any], *extra: str, timeout: float = 600) -> Path:
        """Submit, wait, insist on ``finished:completed``; returns ``<outputs>/<run-id>``.

        Raises:
            RuntimeError: if the run did not complete (the logs' tails are in the message).
            TimeoutError: if it is still running after ``timeout`` seconds.
        """
        run_id = self.submit(run_config, *extra)
        status = self.wait(run_id, timeout)
        if status != "finished:completed":
            raise RuntimeError(f"run {run_id} ended {status!r}; logs in {self.workdir}\n{self.logs()}")
        return self.outputs / str(run_id)

    def logs(self) -> str:
        """The tail of every log this launcher's processes wrote."""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.workdir.rglob("*.log")))
