"""Kubernetes manifests (k8s/): Secrets, ConfigMaps and volumes; k8s/create-secrets.sh; no key material committed.

No cluster: `kubectl kustomize` renders each overlay offline (tests/k8s_manifests.py).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess

import kubernetes_validate
import pytest
from k8s_manifests import (
    JETSON_NODES,
    K8S,
    K8S_VERSION,
    NAMESPACE,
    OVERLAYS,
    REPO,
    containers,
    create_secrets,
    find,
    parse_args,
    rendered,
    script_secrets,
    volumes,
    where,
    workloads,
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_and_configmap_referenced_exists(overlay: str) -> None:
    objs = rendered(overlay)
    configmaps = {o["metadata"]["name"]: o for o in find(objs, "ConfigMap")}
    secrets = {**script_secrets(objs), **{o["metadata"]["name"]: o for o in find(objs, "Secret")}}
    pvcs = {o["metadata"]["name"] for o in find(objs, "PersistentVolumeClaim")}
    for workload, _, c in containers(objs):
        assert "envFrom" not in c, where(workload, c)
        for env in c.get("env", []):
            ref = env.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                assert r["key"] in configmaps[r["name"]]["data"], f"{where(workload, c)}: {r}"
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                assert r["key"] in secrets[r["name"]]["data"], f"{where(workload, c)}: {r}"
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes(workload), f"{where(workload, c)}: mounts undefined volume {m['name']}"
    for workload, template in workloads(objs):
        mounted = {m["name"] for c in template["spec"]["containers"] for m in c.get("volumeMounts", [])}
        for v in template["spec"].get("volumes", []):
            assert v["name"] in mounted, f"{where(workload)}: volume {v['name']} is never mounted"
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, where(workload)
            if "secret" in v:
                data = secrets[v["secret"]["secretName"]].get("data") or {}
                assert all(i["key"] in data for i in v["secret"].get("items", [])), f"{where(workload)}: {v}"
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in pvcs, where(workload)


def test_create_secrets_renders_valid_secrets_offline_and_keys_flower_accepts() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    secrets = script_secrets([{"kind": "StatefulSet", "spec": {"replicas": 3}}])
    assert set(secrets) == {"fedssl-ca", "superlink-tls", "superexec-auth", "supernode-keys", "jetson-supernode-keys"}
    for secret in secrets.values():
        kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
        assert secret["metadata"]["namespace"] == NAMESPACE
    data = {name: {k: base64.b64decode(v) for k, v in (s.get("data") or {}).items()} for name, s in secrets.items()}
    assert set(data["supernode-keys"]) == {"supernode-0", "supernode-1", "supernode-2"}
    assert set(data["jetson-supernode-keys"]) == set(JETSON_NODES)
    for key in [*data["supernode-keys"].values(), *data["jetson-supernode-keys"].values()]:
        private = load_ssh_private_key(key, None)  # what flower-supernode does with the file
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name.startswith("secp")
    assert data["superexec-auth"]["serverapp"] != data["superexec-auth"]["clientapp"]
    assert all(len(v) == 64 for v in data["superexec-auth"].values())
    ca = x509.load_pem_x509_certificate(data["fedssl-ca"]["ca.crt"])
    cert = x509.load_pem_x509_certificate(data["superlink-tls"]["tls.crt"])
    cert.verify_directly_issued_by(ca)
    sans = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName))
    # Every name a pod dials the SuperLink by, plus localhost for `kubectl port-forward`.
    hosts = {parse_args(c["args"])[flag].rsplit(":", 1)[0] for overlay in OVERLAYS
             for _, t, c in containers(rendered(overlay))
             for flag in ("--superlink", "--runtime-api-address") if flag in c["args"]} - {"127.0.0.1"}
    assert hosts == {"superlink"} and hosts | {"localhost", f"superlink.{NAMESPACE}.svc"} <= sans


def test_create_secrets_adds_keys_for_new_supernodes_without_touching_the_rest() -> None:
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    out = create_secrets("--add", "supernode-2", "--add", "jetson-c")
    assert out.returncode == 0, out.stderr
    patches = [line.split(" ", 1) for line in out.stdout.splitlines()]
    assert [secret for secret, _ in patches] == ["supernode-keys", "jetson-supernode-keys"]
    for (_, patch), name in zip(patches, ["supernode-2", "jetson-c"]):
        data = json.loads(patch)["data"]
        assert list(data) == [name]
        load_ssh_private_key(base64.b64decode(data[name]), None)


def test_create_secrets_rejects_bad_arguments() -> None:
    for bad in (["--supernodes", "two"], ["--jetson", "Not_A_Node"], ["--add", "a b"], ["--bogus"]):
        out = create_secrets(*bad)
        assert out.returncode == 2 and "create-secrets:" in out.stderr and "kind: Secret" not in out.stdout, bad


@pytest.mark.parametrize("script", sorted(p.name for p in K8S.glob("*.sh")))
def test_the_scripts_parse_and_refuse_unknown_arguments(script: str) -> None:
    assert subprocess.run(["bash", "-n", str(K8S / script)]).returncode == 0
    out = subprocess.run(["bash", str(K8S / script), "--no-such-flag"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0


def test_no_key_material_is_committed() -> None:
    pem = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{64,}-----END")
    key = script_secrets([])["superlink-tls"]["data"]["tls.key"]
    assert pem.search(base64.b64decode(key))  # the pattern finds a real key
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        path = REPO / name
        if path.is_file() and path.stat().st_size < 1_000_000:
            assert not pem.search(path.read_bytes()), f"{name} holds a private key"
