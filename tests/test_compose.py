"""docker/compose.yaml: the flag contract (docker/flags.yaml), and a real federation in Docker.

The static tests read the files. The `docker` tests build the images on the air-gapped base
(docker/build-base.sh, cached), bring the stack up with a real Docker engine, run federations
over TLS with SuperNode authentication from the host's `flwr` CLI, stop a SuperNode mid-run,
start a SuperNode whose key was never registered, and tear everything down.
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
              "superexec-clientapp-1"]  # Prometheus and Grafana come from a registry; this machine has none


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


def test_parse_args_reads_both_spellings() -> None:
    assert parse_args(["--a=1", "--b", "2", "--c", "--d=x y"]) == {"--a": "1", "--b": "2", "--c": True, "--d": "x y"}
    with pytest.raises(ValueError, match="given twice"):
        parse_args(["--a", "1", "--a=2"])
    with pytest.raises(ValueError, match="not a flag"):
        parse_args(["a"])


def test_compose_runs_every_flower_role_with_exactly_the_contract_flags() -> None:
    services = flower_services()
    assert sorted({role for role, _ in services.values()}) == sorted(set(FLOWER_ROLES.values()))
    for name, (role, service) in services.items():
        contract = FLAGS[role]["args"]
        args = parse_args(service["command"])
        assert sorted(args) == sorted(contract), f"{name}: flags differ from docker/flags.yaml `{role}`"
        for flag, expected in contract.items():
            if expected is True:
                assert args[flag] is True, f"{name}: {flag} takes no value"
            elif isinstance(expected, str) and expected.startswith("<"):
                assert isinstance(args[flag], str) and args[flag], f"{name}: {flag} needs a value"
            else:
                assert args[flag] == str(expected), f"{name}: {flag}={args[flag]!r}, contract says {expected!r}"
        assert service["entrypoint"] == [FLAGS[role]["command"]]
        assert service["image"] == FLAGS["images"][FLAGS[role]["image"]]
        environment = service.get("environment", {})
        for key, value in FLAGS["env"].items():
            assert environment.get(key) == value, f"{name}: environment {key} must be {value!r}"


def test_compose_ports_and_addresses_follow_the_contract() -> None:
    ports, services = FLAGS["ports"], compose_services()
    published = [p.rsplit(":", 1)[1] for p in services["superlink"]["ports"]]
    assert published == [str(ports["superlink"])]
    assert [p.rsplit(":", 1)[1] for p in services["superexec-serverapp"]["ports"]] == [str(ports["metrics"])]
    for name, (role, service) in flower_services().items():
        args = parse_args(service["command"])
        for flag in ("--superlink", "--runtime-api-address"):
            if flag in args:
                expected = ports["superlink"] if role in ("supernode", "superexec-serverapp") else ports["supernode"]
                assert args[flag].endswith(f":{expected}"), f"{name}: {flag}={args[flag]}"
        if "--health-server-address" in args:
            assert args["--health-server-address"].endswith(f":{ports['health']}")


def test_supernodes_have_their_own_key_partition_and_superexec() -> None:
    services = compose_services()
    nodes = sorted(n for n, (role, _) in flower_services().items() if role == "supernode")
    assert len(nodes) >= 2
    partitions = set()
    credentials = [a for a in services["credentials"]["command"] if str(a).startswith("--supernode=")]
    for node in nodes:
        args = parse_args(services[node]["command"])
        assert args["--auth-supernode-private-key"].endswith(f"/{node}")
        assert f"--supernode={node}" in credentials, f"credentials makes no key for {node}"
        assert any(v.startswith(f"{node}-key:") for v in services[node]["volumes"]), f"{node} mounts no own key"
        partitions.add(args["--node-config"])
        superexec = f"superexec-clientapp-{node.rsplit('-', 1)[1]}"
        assert parse_args(services[superexec]["command"])["--runtime-api-address"] == f"{node}:9094"
    assert len(partitions) == len(nodes), "two SuperNodes share a node config"
    for name, service in services.items():  # only the one-shot that writes the volumes runs as root
        assert service.get("user", "49999") != "0:0" or name == "credentials", name


def test_image_pins_match_pyproject_and_contract() -> None:
    pins = {}
    for line in (REPO / "pyproject.toml").read_text().splitlines():
        match = re.match(r'\s*"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([^"]+)",', line)
        if match:
            pins[match[1].lower()] = match[2]
    for role in ("superlink", "supernode"):
        for line in (DOCKER_DIR / role / "requirements.txt").read_text().splitlines():
            if line and not line.startswith("#"):
                name, _, version = line.partition("==")
                assert version, f"docker/{role}/requirements.txt: {line!r} is not pinned"
                if name.lower() in pins:
                    assert version == pins[name.lower()], f"docker/{role}: {name} {version} != pyproject's"
        dockerfile = (DOCKER_DIR / role / "Dockerfile").read_text()
        assert f"ARG UID={FLAGS['user']['uid']}" in dockerfile
        assert f'torch=={pins["torch"]} torchvision=={pins["torchvision"]}' in dockerfile
        assert "ARG BASE_IMAGE=" in dockerfile and "\nUSER " in dockerfile


# --- the credentials one-shot (pure Python, no Docker) ---------------------------------------------
def load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, DOCKER_DIR / "superlink" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_credentials_are_created_once_and_verify(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    credentials = load_script("credentials")
    written = credentials.create(tmp_path, ["superlink", "127.0.0.1"], ["supernode-0", "supernode-1"], owner=None)
    assert "tls/tls.key" in written and "keys-supernode-1/supernode-1" in written
    ca = x509.load_pem_x509_certificate((tmp_path / "ca/ca.crt").read_bytes())
    tls = x509.load_pem_x509_certificate((tmp_path / "tls/tls.crt").read_bytes())
    tls.verify_directly_issued_by(ca)
    san = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["superlink"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    key = serialization.load_ssh_private_key((tmp_path / "keys-supernode-0/supernode-0").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    public = serialization.load_ssh_public_key((tmp_path / "ca/supernodes/supernode-0.pub").read_bytes())
    assert public.public_numbers() == key.public_key().public_numbers()
    assert (tmp_path / "keys-supernode-0/supernode-0").stat().st_mode & 0o777 == 0o400
    assert len((tmp_path / "superexec-auth-clientapp/clientapp").read_bytes()) == 64
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert credentials.create(tmp_path, ["superlink"], ["supernode-0", "supernode-1"], owner=None) == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing replaced


# --- Docker -----------------------------------------------------------------------------------------
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


@pytest.mark.docker
@pytest.mark.parametrize("compose", [["docker-compose"], ["docker", "compose"]], ids=["v1.29", "v2"])
def test_compose_file_is_valid_for_both_compose_versions(compose: list[str]) -> None:
    docker_ready()
    if sh([*compose, "version"], check=False).returncode != 0:
        pytest.skip(f"{' '.join(compose)} is not installed (docker/ci-setup.sh installs both)")
    out = sh([*compose, "-f", str(COMPOSE_FILE), "config"], cwd=REPO)
    config = yaml.safe_load(out.stdout)
    assert set(FEDERATION) | {"credentials", "register-supernodes", "prometheus", "grafana"} <= set(config["services"])
    volumes = config["services"]["prometheus"]["volumes"]
    sources = [v["source"] if isinstance(v, dict) else v.split(":")[0] for v in volumes]
    assert str(DOCKER_DIR / "monitoring" / "prometheus") in sources  # docker/monitoring/, relative to docker/


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """Both images, built on the air-gapped base (built once and cached), as CI builds them."""
    docker_ready()
    started = time.monotonic()
    sh(["bash", str(DOCKER_DIR / "build-base.sh"), BASE_IMAGE], timeout=1200)
    args = ["--base-image", BASE_IMAGE, "--torch-index", ""]
    if Path("/opt/wheels").is_dir():
        args += ["--wheels", "/opt/wheels"]  # this machine's CPU torch wheel
    if Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        args += ["--ca-cert", "/etc/ssl/certs/ca-certificates.crt"]  # the HTTPS proxy's CA
    sh(["bash", str(DOCKER_DIR / "build.sh"), *args], timeout=3000)
    print(f"\n[docker] base + images ready in {time.monotonic() - started:.0f} s")
    return {k: v for k, v in FLAGS["images"].items() if k in ("superlink", "supernode")}


class Stack:
    """docker/compose.yaml under a private project name and free host ports; `down -v` at the end."""

    def __init__(self, workdir: Path) -> None:
        self.project = f"fedssl-test-{uuid.uuid4().hex[:8]}"
        self.compose = [*compose_command(), "-f", str(COMPOSE_FILE), "-p", self.project]
        self.port, self.metrics_port = free_port(), free_port()
        self.env = {**os.environ, "FEDSSL_SUPERLINK_PORT": str(self.port),
                    "FEDSSL_METRICS_PORT": str(self.metrics_port), "FEDSSL_BIND": "127.0.0.1"}
        self.home = workdir / "flwr-home"
        self.workdir = workdir

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return sh([*self.compose, *args], timeout=timeout, check=check, env=self.env, cwd=REPO)

    def up(self, *services: str) -> None:
        self.run("up", "-d", *services, timeout=900)

    def connect(self) -> None:
        """The host's flwr CLI: a TLS connection to the published port, trusting the stack's CA."""
        ca = self.workdir / "ca.crt"
        ca.write_text(self.run("exec", "-T", "superlink", "cat", "/etc/fedssl/ca/ca.crt").stdout)
        self.home.mkdir(exist_ok=True)
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "docker"\n\n[superlink.docker]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{ca}"\n')

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {**os.environ, "FLWR_HOME": str(self.home), "FLWR_TELEMETRY_ENABLED": "0",
               "FLWR_DISABLE_UPDATE_CHECK": "1", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
        return sh([str(Path(sys.executable).parent / "flwr"), *args], timeout=timeout, check=False, env=env, cwd=REPO)

    def nodes(self) -> list[dict[str, Any]]:
        out = self.flwr("supernode", "ls", "docker", "--format", "json")
        return json.loads(out.stdout).get("nodes", []) if out.returncode == 0 else []

    def wait_online(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(n["status"] == "online" for n in self.nodes()) >= count:
                return
            time.sleep(2)
        raise AssertionError(f"fewer than {count} SuperNodes online after {timeout}s: {self.nodes()}\n{self.logs()}")

    def submit(self, run_config: dict[str, Any]) -> int:
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
        out = self.flwr("run", str(REPO), "docker", "--run-config", overrides, "--format", "json")
        assert out.returncode == 0, f"flwr run failed:\n{out.stdout}\n{out.stderr}"
        return int(json.loads(out.stdout)["run-id"])

    def submit_in_network(self, run_config: dict[str, Any]) -> int:
        """The same through the compose file's `flwr` service: `flwr run /app fedssl` inside the network."""
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
        out = self.run("run", "--rm", "-T", "flwr", "run", "/app", "fedssl", "--run-config", overrides,
                       "--format", "json")
        return int(json.loads(out.stdout[out.stdout.index("{"):])["run-id"])

    def status(self, run_id: int) -> str:
        out = self.flwr("ls", "docker", "--run-id", str(run_id), "--format", "json")
        runs = json.loads(out.stdout).get("runs", []) if out.returncode == 0 else []
        return runs[0].get("status", "") if runs else ""

    def output(self, run_id: int, name: str, check: bool = True) -> str:
        return self.run("exec", "-T", "superexec-serverapp", "cat", f"/outputs/{run_id}/{name}", check=check).stdout

    def metrics(self, run_id: int) -> dict[str, Any] | None:
        try:
            return json.loads(self.output(run_id, "metrics.json", check=False))
        except ValueError:
            return None

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "60", timeout=120, check=False).stdout[-20000:]

    def down(self) -> None:
        self.run("down", "-v", "--remove-orphans", "-t", "5", timeout=300, check=False)


def toml_value(value: Any) -> str:
    return repr(value) if isinstance(value, (int, float)) else f"'{value}'"


def scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.read().decode()
    except OSError:
        return None


def metric_value(text: str, name: str) -> float | None:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.eE+-]+)$", text, re.MULTILINE)
    return float(match[1]) if match else None


@pytest.fixture(scope="module")
def stack(images: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    s = Stack(tmp_path_factory.mktemp("compose"))
    s.started = time.monotonic()
    try:
        s.up(*FEDERATION)
        s.connect()
        s.wait_online(2)
        print(f"\n[docker] compose up to 2 SuperNodes online: {time.monotonic() - s.started:.0f} s")
        yield s
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.down()
        leftovers = sh(["docker", "volume", "ls", "-q", "--filter", f"name={s.project}_"], check=False).stdout
        assert not leftovers.strip(), f"volumes left behind: {leftovers}"


def wait_finished(stack: Stack, run_id: int, timeout: float, on_poll=None) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if on_poll is not None:
            on_poll()
        status = stack.status(run_id)
        if status.startswith("finished"):
            return status
        time.sleep(3)
    raise AssertionError(f"run {run_id} not finished after {timeout}s\n{stack.logs()}")


@pytest.mark.docker
def test_two_rounds_over_tls_with_node_auth(stack: Stack) -> None:
    # Prepare: both SuperNodes are online (the fixture waited); the credentials stayed in volumes.
    assert sorted(n["status"] for n in stack.nodes()) == ["online", "online"]
    scraped: list[str] = []
    first_round: list[float] = []
    started = time.monotonic()

    # Execute: a tiny run from the host's flwr CLI; scrape the exporter while it runs.
    run_id = stack.submit({**COMPOSE_RUN, "min-train-nodes": 2})

    def poll() -> None:
        text = scrape(f"http://127.0.0.1:{stack.metrics_port}/metrics")
        if text and "fedssl_rounds_completed_total" in text:
            scraped.append(text)
        if not first_round and (stack.metrics(run_id) or {}).get("rounds"):
            first_round.append(time.monotonic())

    status = wait_finished(stack, run_id, timeout=1500, on_poll=poll)
    if first_round:
        print(f"\n[docker] first round: {first_round[0] - started:.0f} s after submit, "
              f"{first_round[0] - stack.started:.0f} s after `compose up`; "
              f"whole run {time.monotonic() - started:.0f} s")

    # Assert: Flower's status (`flwr run` exits 0 even on a crash), the output volume, the exporter.
    assert status == "finished:completed", stack.logs()
    metrics = stack.metrics(run_id)
    assert metrics["status"] == "completed"
    assert [r["round"] for r in metrics["rounds"]] == [1, 2]
    assert [r["replied"] for r in metrics["rounds"]] == [2, 2]  # both SuperNodes, every round
    listing = stack.run("exec", "-T", "superexec-serverapp", "ls", f"/outputs/{run_id}").stdout.split()
    assert {"metrics.json", "checkpoint.pt", "encoder.pt"} <= set(listing)
    for _ in range(10):  # the exporter lingers after the last round until one scrape has seen it
        text = scrape(f"http://127.0.0.1:{stack.metrics_port}/metrics")
        if text and "fedssl_rounds_completed_total" in text:
            scraped.append(text)
        time.sleep(0.5)
    assert scraped, "the ServerApp's exporter never answered on the published metrics port"
    assert metric_value(scraped[-1], "fedssl_rounds_completed_total") == 2.0
    # The compose file's own flwr CLI (service `flwr`, TLS connection preset) sees the same run.
    out = stack.run("run", "--rm", "-T", "flwr", "ls", "fedssl", "--run-id", str(run_id), "--format", "json")
    assert json.loads(out.stdout[out.stdout.index("{"):])["runs"][0]["status"] == "finished:completed"


@pytest.mark.docker
def test_run_finishes_when_a_supernode_stops_mid_run(stack: Stack) -> None:
    # Prepare: both SuperNodes online again; a run that survives losing one, submitted this time
    # from inside the network (the README's way without a local install).
    stack.wait_online(2)
    run_id = stack.submit_in_network({**COMPOSE_RUN, "num-rounds": 4, "min-train-nodes": 1, "metrics-port": 0,
                           "round-timeout": 600.0})

    # Execute: stop supernode-1 (and its SuperExec) once the first round is in.
    deadline = time.monotonic() + 1200
    while not (stack.metrics(run_id) or {}).get("rounds"):
        assert time.monotonic() < deadline, f"no round finished\n{stack.logs()}"
        assert not stack.status(run_id).startswith("finished"), "run ended before a SuperNode could be stopped"
        time.sleep(3)
    stack.run("stop", "-t", "10", "supernode-1", "superexec-clientapp-1")
    status = wait_finished(stack, run_id, timeout=1500)

    # Assert: the run completed all rounds; after the stop only supernode-0 replied.
    assert status == "finished:completed", stack.logs()
    rounds = stack.metrics(run_id)["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert rounds[0]["replied"] == 2 and rounds[-1]["replied"] == 1  # supernode-1 really was gone
    assert (tmp := stack.output(run_id, "metrics.json")) and json.loads(tmp)["status"] == "completed"
    statuses = sorted(n["status"] for n in stack.nodes())
    assert statuses == ["offline", "online"], statuses
    stack.up("supernode-1", "superexec-clientapp-1")  # leave the stack whole for the next test
    stack.wait_online(2)


@pytest.mark.docker
def test_unregistered_supernode_is_refused(stack: Stack, images: dict[str, str], tmp_path: Path) -> None:
    # Prepare: a fresh key pair the SuperLink has never seen, readable by the image's user.
    private, _ = load_script("credentials").supernode_key("rogue")
    (tmp_path / "rogue").write_bytes(private)
    (tmp_path / "rogue").chmod(0o444)
    tmp_path.chmod(0o755)
    before = {n["node-id"] for n in stack.nodes()}

    # Execute: a SuperNode with that key, on the stack's network, with the stack's CA.
    out = sh(["docker", "run", "--rm", "--network", f"{stack.project}_default",
              "-v", f"{stack.project}_ca:/etc/fedssl/ca:ro", "-v", f"{tmp_path}:/etc/fedssl/keys:ro",
              images["supernode"], "--superlink", "superlink:8000", "--root-certificates", "/etc/fedssl/ca/ca.crt",
              "--auth-supernode-private-key", "/etc/fedssl/keys/rogue", "--max-retries", "0"],
             timeout=300, check=False)

    # Assert: it gives up with an error, and the SuperLink's node list has not grown.
    log = out.stdout + out.stderr
    assert out.returncode != 0, log
    assert "Failed to activate SuperNode" in log, log  # not a TLS or network failure: the key was refused
    assert {n["node-id"] for n in stack.nodes()} == before
