"""docker/compose.yaml for tests: read it (contract tests) and run it with a real Docker engine.

``Stack`` brings the stack up with the README's own commands (the project name comes from the
environment, as `.env` gives it to users), talks to the SuperLink with the flwr CLI *inside* the
network (the SuperLink's port is not published by default) and tears everything down with ``down -v``.
The ``images`` and ``stack`` fixtures live in tests/conftest.py so every compose test module shares
one stack.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.flwr_cli import TINY_RUN, free_port

REPO = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
EXPOSE_FILE = DOCKER_DIR / "compose.expose.yaml"
FLAGS = yaml.safe_load((DOCKER_DIR / "flags.yaml").read_text())
BASE_IMAGE = "fedssl/base:bookworm-py311"
FLOWER_ROLES = {  # (entrypoint, image key) -> the flags.yaml section its command must follow
    ("flower-superlink", "superlink"): "superlink",
    ("flower-superexec", "superlink"): "superexec-serverapp",
    ("flower-supernode", "supernode"): "supernode",
    ("flower-superexec", "supernode"): "superexec-clientapp",
}
COMPOSE_RUN = {  # the launcher's tiny run, in the containers' folders
    **TINY_RUN, "outputs-dir": "/outputs", "metrics-port": 9400,
    "round-timeout": 900.0,  # a starved CPU makes a ClientApp start slowly (docs/docker.md); don't drop it
}
FEDERATION = ["superlink", "superexec-serverapp", "supernode-0", "superexec-clientapp-0", "supernode-1",
              "superexec-clientapp-1", "supervisor"]  # what `up -d` starts and keeps running (no profile)


# --- reading the compose file ----------------------------------------------------------------------
def interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with the defaults (what a user without overrides gets)."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def compose_services() -> dict[str, dict[str, Any]]:
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text())["services"])  # safe_load resolves anchors


def parse_args(tokens: list[str]) -> dict[str, Any]:
    """``[--a=1, --b, 2, --c]`` -> ``{"--a": "1", "--b": "2", "--c": True}``.

    Raises:
        ValueError: on a token that is neither a flag nor a flag's value, or a repeated flag.
    """
    args: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = str(tokens[i])
        if not token.startswith("--"):
            raise ValueError(f"{token!r} is not a flag")
        name, eq, value = token.partition("=")
        if not eq and i + 1 < len(tokens) and not str(tokens[i + 1]).startswith("--"):
            value, i = str(tokens[i + 1]), i + 1
        if name in args:
            raise ValueError(f"{name} given twice")
        args[name] = value if (eq or value) else True
        i += 1
    return args


def flower_services() -> dict[str, tuple[str, dict[str, Any]]]:
    """Every compose service that runs a Flower process -> (its flags.yaml role, the service)."""
    images = {interpolate(v): k for k, v in FLAGS["images"].items()}
    found = {}
    for name, service in compose_services().items():
        entrypoint = service.get("entrypoint", [None])
        entrypoint = entrypoint[0] if isinstance(entrypoint, list) else entrypoint
        if str(entrypoint).startswith("flower-"):
            found[name] = (FLOWER_ROLES[(entrypoint, images[service["image"]])], service)
    return found


def docker_ready() -> None:
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return
    message = "no Docker engine: run docker/ci-setup.sh (scripts/test.sh does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def compose_command() -> list[str]:
    """Compose v2 (`docker compose`, what users have) when installed, else Debian's docker-compose 1.29."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def sh(cmd: list[str], timeout: float = 600, check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


def build_images() -> dict[str, str]:
    """The project's images, built on the air-gapped base (built once and cached), as CI builds them."""
    docker_ready()
    started = time.monotonic()
    sh(["bash", str(DOCKER_DIR / "build-base.sh"), BASE_IMAGE], timeout=1200)
    args = ["--base-image", BASE_IMAGE, "--torch-index", ""]
    if Path("/opt/wheels").is_dir():
        args += ["--wheels", "/opt/wheels"]  # this machine's CPU torch wheel
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        args += ["--ca-cert", "/etc/ssl/certs/ca-certificates.crt"]  # the HTTPS proxy's CA
    sh(["bash", str(DOCKER_DIR / "build.sh"), *args, "superlink", "supernode", "prometheus"], timeout=3000)
    print(f"\n[docker] base + images ready in {time.monotonic() - started:.0f} s")
    return {k: v for k, v in FLAGS["images"].items() if k in ("superlink", "supernode", "prometheus")}


class Stack:
    """docker/compose.yaml under a private project name; `down -v` at the end."""

    def __init__(self, workdir: Path) -> None:
        self.project = f"fedssl-test-{uuid.uuid4().hex[:8]}"
        self.compose = [*compose_command(), "-f", str(COMPOSE_FILE)]
        self.prometheus_port = free_port()
        self.env = {**os.environ, "COMPOSE_PROJECT_NAME": self.project, "FEDSSL_BASE_IMAGE": BASE_IMAGE,
                    "FEDSSL_PROMETHEUS_PORT": str(self.prometheus_port)}
        self.workdir = workdir
        self.started = time.monotonic()

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return sh([*self.compose, *args], timeout=timeout, check=check, env=self.env, cwd=REPO)

    def up(self, *services: str) -> None:
        self.run("up", "-d", *services, timeout=900)

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """The flwr CLI in the SuperLink's own container (connection `fedssl`, TLS with the stack's CA)."""
        return self.run("exec", "-T", "superlink", "fedssl-flwr", *args, timeout=timeout, check=False)

    def flwr_json(self, *args: str) -> dict[str, Any]:
        out = self.flwr(*args, "--format", "json")
        try:
            return json.loads(out.stdout[out.stdout.index("{"):]) if out.returncode == 0 else {}
        except ValueError:
            return {}

    def nodes(self) -> list[dict[str, Any]]:
        return self.flwr_json("supernode", "ls", "fedssl").get("nodes", [])

    def wait_online(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(n["status"] == "online" for n in self.nodes()) >= count:
                return
            time.sleep(2)
        raise AssertionError(f"fewer than {count} SuperNodes online after {timeout}s: {self.nodes()}\n{self.logs()}")

    def submit(self, run_config: dict[str, Any]) -> int:
        """`flwr run /app fedssl` through the compose file's `flwr` service, as the README submits."""
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
        out = self.run("run", "--rm", "-T", "flwr", "run", "/app", "fedssl", "--run-config", overrides,
                       "--format", "json")
        return int(json.loads(out.stdout[out.stdout.index("{"):])["run-id"])

    def status(self, run_id: int) -> str:
        runs = self.flwr_json("ls", "fedssl", "--run-id", str(run_id)).get("runs", [])
        return runs[0].get("status", "") if runs else ""

    def output(self, folder: int | str, name: str, check: bool = True) -> str:
        return self.run("exec", "-T", "supervisor", "cat", f"/outputs/{folder}/{name}", check=check).stdout

    def metrics(self, folder: int | str) -> dict[str, Any] | None:
        try:
            return json.loads(self.output(folder, "metrics.json", check=False))
        except ValueError:
            return None

    def prometheus(self, query: str) -> list[dict[str, Any]]:
        """An instant query against the stack's Prometheus (monitoring profile, 127.0.0.1 only)."""
        url = f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        text = fetch(url)
        return json.loads(text)["data"]["result"] if text else []

    def logs(self, *services: str) -> str:
        return self.run("logs", "--no-color", "--tail", "60", *services, timeout=120, check=False).stdout[-20000:]

    def down(self) -> None:
        self.run("--profile", "monitoring", "down", "-v", "--remove-orphans", "-t", "5", timeout=900, check=False)


def toml_value(value: Any) -> str:
    return repr(value) if isinstance(value, (int, float)) else f"'{value}'"


def fetch(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.read().decode()
    except OSError:
        return None


def wait_finished(stack: Stack, run_id: int, timeout: float, on_poll=None) -> str:
    """Flower's final status of ``run_id``: asked every 10 s (each `flwr ls` is a Python process in
    the SuperLink's container, seconds of CPU), every 2 s once the run's metrics.json says it ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if on_poll is not None:
            on_poll()
        status = stack.status(run_id)
        if status.startswith("finished"):
            return status
        ended = (stack.metrics(run_id) or {}).get("status") in ("completed", "failed")
        time.sleep(2 if ended else 10)
    raise AssertionError(f"run {run_id} not finished after {timeout}s\n{stack.logs()}")


def load_script(name: str) -> Any:
    """A script of docker/superlink/ as a module (they are installed as commands, not packages)."""
    spec = importlib.util.spec_from_file_location(name, DOCKER_DIR / "superlink" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
