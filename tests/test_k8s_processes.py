"""Kubernetes manifests (k8s/): the rendered SuperLink and SuperNode command lines, run as real Flower processes.

No cluster: `kubectl kustomize` renders each overlay offline (tests/k8s_manifests.py).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from k8s_manifests import (
    FLAGS,
    find,
    pod_template,
    rendered,
    script_secrets,
    volumes,
)

from launcher.flwr_cli import free_port


def _localize(workload: dict, c: dict, secrets: Path, env: dict[str, str], ports: dict[str, str]) -> list[str]:
    """A container's command line for this machine: mounts -> local folders, 0.0.0.0 -> 127.0.0.1."""
    local = {}
    for m in c["volumeMounts"]:
        v = volumes(workload)[m["name"]]
        folder = secrets / v["secret"]["secretName"] if "secret" in v else secrets.parent / "volumes" / m["name"]
        local[m["mountPath"]] = folder
        local[m["mountPath"]].mkdir(parents=True, exist_ok=True)
    out = []
    for arg in c["args"]:
        mount = next((m for m in sorted(local, key=len, reverse=True) if arg.startswith(m + "/")), None)
        arg = str(local[mount]) + arg[len(mount):] if mount else arg
        for var, value in env.items():
            arg = arg.replace(f"$({var})", value)
        out.append(ports.get(arg, "127.0.0.1" if arg == "0.0.0.0" else arg))
    return [str(Path(sys.executable).parent / c["command"][0]), *out]


@pytest.mark.federation
def test_the_rendered_superlink_and_supernode_run_with_the_scripts_secrets(tmp_path: Path) -> None:
    """The gpu overlay's SuperLink and supernode-0 command lines as real Flower 1.41 processes.

    Only what cannot work outside a pod is rewritten: mount paths point at the Secrets' files,
    0.0.0.0 becomes 127.0.0.1, the ports are free ones and `superlink` is dialled as `localhost`
    (also in the certificate, for port-forwarding). As docs/kubernetes.md says, the SuperNode's
    public key is registered with `flwr supernode register` before it can join.
    """
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_ssh_private_key

    objs = rendered("gpu")
    secrets = tmp_path / "secrets"
    for secret in script_secrets(objs).values():
        (folder := secrets / secret["metadata"]["name"]).mkdir(parents=True)
        for key, value in (secret.get("data") or {}).items():
            (folder / key).write_bytes(base64.b64decode(value))
    api, runtime = str(free_port()), str(free_port())
    ports = {"8000": api, "superlink:8000": f"localhost:{api}", "9094": runtime}
    superlink = find(objs, "Deployment", "superlink")[0]
    supernode = find(objs, "StatefulSet", "supernode")[0]
    link_cmd = _localize(superlink, pod_template(superlink)["spec"]["containers"][0], secrets, {}, ports)
    node_env = {"POD_NAME": "supernode-0", "PARTITION_ID": "0", "NUM_PARTITIONS": "2", "DATA_DIR": ""}
    node = next(c for c in pod_template(supernode)["spec"]["containers"] if c["name"] == "supernode")
    node_cmd = _localize(supernode, node, secrets, node_env, ports)

    home, ca = tmp_path / "flwr-home", secrets / "fedssl-ca" / "ca.crt"
    home.mkdir()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "k8s"\n\n[superlink.k8s]\n'
                                      f'address = "localhost:{api}"\nroot-certificates = "{ca}"\n')
    env = {**os.environ, **FLAGS["env"], "FLWR_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    flwr = str(Path(sys.executable).parent / "flwr")
    procs: list[subprocess.Popen] = []

    def start(name: str, cmd: list[str]) -> None:
        with open(tmp_path / f"{name}.log", "wb") as log:
            procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))

    def health(port: str, context: ssl.SSLContext | None) -> bool:
        try:
            url = f"{'https' if context else 'http'}://localhost:{port}/health"
            return urllib.request.urlopen(url, timeout=2, context=context).status == 200
        except OSError:
            return False

    def online() -> bool:
        out = subprocess.run([flwr, "supernode", "ls", "k8s", "--format", "json"], env=env, capture_output=True,
                             text=True, timeout=60)
        return out.returncode == 0 and any(n["status"] == "online" for n in json.loads(out.stdout)["nodes"])

    def wait(ready, what: str, timeout: float = 60) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and all(p.poll() is None for p in procs):
            if ready():
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in tmp_path.glob("*.log"))
        pytest.fail(f"{what}: not within {timeout}s or a process died\n{logs}")

    try:
        start("superlink", link_cmd)
        # The probe's endpoint, with the certificate checked against the script's CA.
        wait(lambda: health(api, ssl.create_default_context(cafile=str(ca))), "SuperLink /health over TLS")
        key = load_ssh_private_key((secrets / "supernode-keys" / "supernode-0").read_bytes(), None)
        public = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
        (tmp_path / "supernode-0.pub").write_bytes(public)
        out = subprocess.run([flwr, "supernode", "register", str(tmp_path / "supernode-0.pub"), "k8s"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        start("supernode", node_cmd)
        wait(lambda: health(runtime, None), "SuperNode /health")
        wait(online, "SuperNode online with its registered key")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
