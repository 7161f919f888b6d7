"""Render and walk the Kubernetes manifests of k8s/ offline, for tests/test_k8s_*.py.

``rendered(overlay)`` is the output of ``kubectl kustomize k8s/overlays/<overlay>``;
``script_secrets(objs)`` what ``k8s/create-secrets.sh --print`` makes for that overlay. The rest
walks pods and containers, parses Flower command lines and matches label selectors.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAYS = ("local", "gpu", "jetson")
NAMESPACE = "fedssl"
FLAGS = yaml.safe_load((REPO / "docker" / "flags.yaml").read_text())
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
JETSON_NODES = ("jetson-a", "jetson-b")  # the node names create-secrets.sh is given here
K8S_VERSION = "1.32"  # the API the manifests are validated against (kubectl here is 1.32) ...
OLDEST_K8S = "1.28"  # ... and the oldest they support: the pod-index label is 1.28's
# A strict schema for the part of monitoring.coreos.com/v1 ServiceMonitor used here: the Prometheus
# Operator's CRD is not bundled with kubernetes-validate. Field names and the duration pattern are
# the CRD's; any other field fails.
DURATION = r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICEMONITOR_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
            "name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STRINGS}},
        "spec": {"type": "object", "additionalProperties": False, "required": ["selector", "endpoints"], "properties": {
            "jobLabel": {"type": "string"},
            "selector": {"type": "object", "additionalProperties": False, "properties": {"matchLabels": _STRINGS}},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["port"], "properties": {
                    "port": {"type": "string"}, "path": {"type": "string"}, "scheme": {"enum": ["http", "https"]},
                    "interval": {"type": "string", "pattern": DURATION},
                    "scrapeTimeout": {"type": "string", "pattern": DURATION}}}}}}},
}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


# --- rendering -------------------------------------------------------------------------------------
def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl (with kustomize) is not installed: apt-get install kubectl")
    return path


def kustomize(directory: Path) -> list[dict]:
    out = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@cache
def _rendered(overlay: str) -> tuple[dict, ...]:
    return tuple(kustomize(K8S / "overlays" / overlay))


def rendered(overlay: str) -> list[dict]:
    return list(_rendered(overlay))


def create_secrets(*args: str) -> subprocess.CompletedProcess:
    """Run k8s/create-secrets.sh --print (offline) with a throw-away public folder."""
    kubectl()
    with tempfile.TemporaryDirectory() as public:
        return subprocess.run(["bash", str(K8S / "create-secrets.sh"), "--print", "--public-dir", public, *args],
                              capture_output=True, text=True, timeout=60)


@cache
def _secrets(supernodes: int) -> tuple[dict, ...]:
    out = create_secrets("--supernodes", str(supernodes), "--jetson", " ".join(JETSON_NODES))
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def script_secrets(objs: list[dict]) -> dict[str, dict]:
    """The Secrets create-secrets.sh makes for this overlay's StatefulSet size, by name."""
    replicas = max([o["spec"]["replicas"] for o in find(objs, "StatefulSet")], default=0)
    return {s["metadata"]["name"]: s for s in _secrets(replicas)}


# --- walking ---------------------------------------------------------------------------------------
def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def pod_template(workload: dict) -> dict:
    spec = workload["spec"]
    return spec["jobTemplate"]["spec"]["template"] if workload["kind"] == "CronJob" else spec["template"]


def workloads(objs: list[dict]) -> Iterator[tuple[dict, dict]]:
    """(workload, pod template) for every object that makes pods."""
    for obj in objs:
        if obj["kind"] in WORKLOAD_KINDS:
            yield obj, pod_template(obj)


def containers(objs: list[dict]) -> Iterator[tuple[dict, dict, dict]]:
    """(workload, pod template, container) for every container, init containers included."""
    for obj, template in workloads(objs):
        for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            yield obj, template, c


def flower_containers(objs: list[dict]) -> Iterator[tuple[dict, dict, dict]]:
    """The containers that run a Flower process (docker/flags.yaml applies to them), not helpers."""
    for obj, template, c in containers(objs):
        if c["command"][0].startswith("flower-"):
            yield obj, template, c


def volumes(workload: dict) -> dict[str, dict]:
    """Pod volumes by name, a StatefulSet's volumeClaimTemplates included (as PVC volumes)."""
    claims = {t["metadata"]["name"]: {"name": t["metadata"]["name"], "persistentVolumeClaim": {}}
              for t in workload["spec"].get("volumeClaimTemplates", [])}
    return {**claims, **{v["name"]: v for v in pod_template(workload)["spec"].get("volumes", [])}}


def mount_of(workload: dict, container: dict, path: str) -> tuple[dict, str]:
    """(volume, path inside it) of a file path in a container; fails when no volume holds it."""
    for m in sorted(container.get("volumeMounts", []), key=lambda m: -len(m["mountPath"])):
        prefix = m["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            return volumes(workload)[m["name"]], path[len(prefix):]
    raise AssertionError(f"{container['name']}: {path} is on no volume (the root filesystem is read-only)")


def env_values(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


# --- Flower command lines ------------------------------------------------------------------------------
def parse_args(args: list[str]) -> dict[str, str | bool]:
    """``--flag value`` and bare ``--flag`` into {flag: value or True}; a repeated flag fails."""
    parsed: dict[str, str | bool] = {}
    i = 0
    while i < len(args):
        flag = args[i]
        assert flag.startswith("--"), f"positional argument {flag!r} in {args}"
        assert flag not in parsed, f"{flag} given twice in {args}"
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            parsed[flag], i = args[i + 1], i + 2
        else:
            parsed[flag], i = True, i + 1
    return parsed


def role(template: dict, container: dict) -> str:
    """The docker/flags.yaml section a container runs: by its command, and for SuperExec by its pod."""
    command = container["command"][0]
    if command == "flower-superexec":
        component = template["metadata"]["labels"]["app.kubernetes.io/component"]
        return {"serverapp": "superexec-serverapp", "supernode": "superexec-clientapp"}[component]
    return {"flower-superlink": "superlink", "flower-supernode": "supernode"}[command]


def placeholder_pattern(expected: str) -> str:
    """``<superlink-host>:8000`` -> a regex in which each ``<...>`` is any non-empty value."""
    return "".join(".+" if part.startswith("<") else re.escape(part) for part in re.split(r"(<[^>]+>)", expected))


# --- selectors, quantities -------------------------------------------------------------------------
def label_match(selector: dict, labels: dict) -> bool:
    """A LabelSelector against labels (this project uses matchLabels only)."""
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are used here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def ingress_rules(objs: list[dict], labels: dict) -> list[dict]:
    """The ingress rules of every NetworkPolicy that selects pods with these labels."""
    return [rule for policy in find(objs, "NetworkPolicy") if label_match(policy["spec"]["podSelector"], labels)
            for rule in policy["spec"].get("ingress", [])]


def admits(rule: dict, port: str, source: dict | None) -> bool:
    """Does a rule let in a pod of this namespace with labels ``source`` (None: a pod elsewhere)?"""
    ports = [p["port"] for p in rule.get("ports", [])]
    if ports and port not in ports:
        return False
    peers = rule.get("from")
    if not peers:
        return True
    for peer in peers:
        if "namespaceSelector" in peer or "ipBlock" in peer:
            return True  # other namespaces or addresses: count as anyone
        if source is not None and label_match(peer["podSelector"], source):
            return True
    return False


def quantity(value: str | int) -> float:
    """A Kubernetes resource quantity (``250m``, ``2Gi``, ``4``) as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match and match.group(2) in {"", *units}, f"unparsable quantity {value!r}"
    return float(match.group(1)) * units.get(match.group(2), 1)


def seconds(duration: str) -> float:
    """A Prometheus duration (``5s``, ``1m30s``, ``500ms``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}
    parts = re.findall(r"([0-9]+)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"unparsable duration {duration!r}"
    return sum(int(n) * units[u] for n, u in parts)


def where(workload: dict, container: dict | None = None) -> str:
    return workload["metadata"]["name"] + (f"/{container['name']}" if container else "")
