"""docker/compose.yaml's contract, read from the files (no Docker): flags, ports, images, secrets.

docker/flags.yaml is the one list of flags, ports and images that compose and k8s must follow;
these tests also pin the secure defaults (nothing published beyond loopback, the SuperLink not at
all, Grafana with a generated password) and what `docker compose up -d` starts without a registry.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from compose_stack import (
    DOCKER_DIR,
    EXPOSE_FILE,
    FEDERATION,
    FLAGS,
    FLOWER_ROLES,
    REPO,
    compose_services,
    flower_services,
    interpolate,
    load_script,
    parse_args,
)


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
    ports = FLAGS["ports"]
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


def published(service: dict) -> list[str]:
    """``host-address:host-port:container-port`` of each published port (defaults interpolated)."""
    return [str(p) for p in service.get("ports", [])]


def test_by_default_nothing_is_published_beyond_loopback_and_the_superlink_not_at_all() -> None:
    services = compose_services()
    for name, service in services.items():
        for port in published(service):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
    assert not published(services["superlink"])  # port 8000 also serves Flower's Control API (no login)
    assert not published(services["superexec-serverapp"])  # the exporter has no authentication
    assert {n for n, s in services.items() if published(s)} == {"prometheus", "grafana"}


def test_the_expose_file_publishes_only_the_superlink_port() -> None:
    expose = interpolate(yaml.safe_load(EXPOSE_FILE.read_text())["services"])
    assert list(expose) == ["superlink"]
    assert expose["superlink"]["ports"] == [f"127.0.0.1:{FLAGS['ports']['superlink']}:{FLAGS['ports']['superlink']}"]


def test_up_without_a_profile_needs_only_images_built_here() -> None:
    services = compose_services()
    default = {n for n, s in services.items() if not s.get("profiles")}
    assert set(FEDERATION) | {"credentials", "register-supernodes"} == default
    ours = set(FLAGS["images"].values())
    for name in default:
        assert services[name]["image"] in ours, f"{name} would be pulled: {services[name]['image']}"
    assert services["prometheus"]["image"] == FLAGS["images"]["prometheus"] and "build" in services["prometheus"]
    assert services["prometheus"]["profiles"] == ["monitoring", "grafana"]
    assert services["grafana"]["profiles"] == ["grafana"]  # not in Debian: preloaded by the operator


def test_grafana_has_a_generated_password_and_no_anonymous_access() -> None:
    services = compose_services()
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    secret_dir = env["GF_SECURITY_ADMIN_PASSWORD__FILE"].rsplit("/", 1)[0]
    assert f"grafana-admin:{secret_dir}:ro" in services["grafana"]["volumes"]
    assert "grafana-admin:/init/grafana" in services["credentials"]["volumes"]


def test_prometheus_scrapes_the_exporter_inside_the_network() -> None:
    config = yaml.safe_load((DOCKER_DIR / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert targets == [f"superexec-serverapp:{FLAGS['ports']['metrics']}"]


def test_the_supervisor_sees_the_runs_and_resubmits_the_mounted_app() -> None:
    services = compose_services()
    supervisor = services["supervisor"]
    assert supervisor["entrypoint"] == ["fedssl-supervise"] and supervisor["restart"] == "unless-stopped"
    assert "outputs:/outputs" in supervisor["volumes"] and "..:/app:ro" in supervisor["volumes"]
    assert "outputs:/outputs" in services["superexec-serverapp"]["volumes"]
    args = supervisor["command"]
    assert args[0] == "/outputs" and "--app=/app" in args
    dockerfile = (DOCKER_DIR / "superlink" / "Dockerfile").read_text()
    assert "docker/superlink/supervisor.py /usr/local/bin/fedssl-supervise" in dockerfile


# --- the credentials one-shot (pure Python, no Docker) ---------------------------------------------
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
    password = (tmp_path / "grafana/admin-password").read_bytes()
    assert len(password) >= 24 and password != b"admin"
    assert (tmp_path / "grafana/admin-password").stat().st_mode & 0o777 == 0o400
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert credentials.create(tmp_path, ["superlink"], ["supernode-0", "supernode-1"], owner=None) == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing replaced


def test_every_script_an_image_installs_as_a_command_is_executable() -> None:
    copied = re.findall(r"^COPY (docker/\S+\.py) /usr/local/bin/", (DOCKER_DIR / "superlink" / "Dockerfile").read_text()
                        + (DOCKER_DIR / "supernode" / "Dockerfile").read_text(), re.MULTILINE)
    assert "docker/superlink/supervisor.py" in copied
    for script in copied:
        assert (REPO / script).stat().st_mode & 0o111, f"{script} is not executable: the container cannot run it"
