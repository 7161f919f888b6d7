"""Kubernetes manifests (k8s/): every overlay renders, passes the Kubernetes API schemas, and
keeps the project's rules; the pods run exactly the flags of docker/flags.yaml.

No cluster runs here: `kubectl kustomize` renders each overlay, `kubernetes-validate` checks every
object strictly against the API schemas it bundles (offline), and k8s/create-secrets.sh renders
its Secrets with --print. The last test (marked `federation`) starts the rendered SuperLink and
SuperNode command lines as real Flower 1.41 processes with the script's certificates and keys.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from k8s_manifests import (
    FLAGS,
    JETSON_NODES,
    K8S,
    NAMESPACE,
    OVERLAYS,
    PYPROJECT,
    REPO,
    VERSION,
    admits,
    containers,
    create_secrets,
    env_values,
    find,
    ingress_rules,
    kustomize,
    label_match,
    mount_of,
    parse_args,
    placeholder_pattern,
    pod_template,
    quantity,
    rendered,
    role,
    script_secrets,
    seconds,
    volumes,
    workloads,
)

from launcher.flwr_cli import free_port

K8S_VERSION = "1.32"  # the API the manifests are validated against (kubectl here is 1.32) ...
OLDEST_K8S = "1.28"  # ... and the oldest they support: the pod-index label is 1.28's
# The image each workload's containers run, per overlay (keys of docker/flags.yaml `images`).
IMAGES = {
    "local": {"superlink": "superlink", "serverapp": "superlink", "supernode": "supernode"},
    "gpu": {"superlink": "superlink", "serverapp": "superlink", "supernode": "supernode-cuda"},
    "jetson": {"superlink": "superlink", "serverapp": "superlink", "jetson-supernode": "supernode-jetson"},
}

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


def where(workload: dict, container: dict | None = None) -> str:
    return workload["metadata"]["name"] + (f"/{container['name']}" if container else "")


# --- schemas and metadata --------------------------------------------------------------------------
@pytest.mark.parametrize("version", [OLDEST_K8S, K8S_VERSION])
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_passes_the_kubernetes_api_schemas(overlay: str, version: str) -> None:
    objs = rendered(overlay)
    assert {"Namespace", "Deployment", "Service", "NetworkPolicy", "ConfigMap"} <= {o["kind"] for o in objs}
    for obj in objs:
        name = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "ServiceMonitor":
            jsonschema.validate(obj, SERVICEMONITOR_SCHEMA)
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{name}: {err.caught.message} at {list(err.caught.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{name}: no Kubernetes {version} schema for {obj['apiVersion']} {obj['kind']}")


def test_the_strict_validation_catches_a_misspelt_field() -> None:
    deployment = find(rendered("local"), "Deployment", "superlink")[0]
    template = deployment["spec"]["template"]
    container = {**template["spec"]["containers"][0], "readinesProbe": {}}  # a typo of readinessProbe
    broken = {**deployment, "spec": {**deployment["spec"], "template": {
        **template, "spec": {**template["spec"], "containers": [container]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    monitor = find(rendered("gpu"), "ServiceMonitor")[0]
    for bad in ({**monitor, "spec": {**monitor["spec"], "endpoint": []}},
                {**monitor, "spec": {**monitor["spec"], "endpoints": [{"port": "metrics", "interval": "5 s"}]}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SERVICEMONITOR_SCHEMA)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_live_in_the_fedssl_namespace_with_the_project_labels(overlay: str) -> None:
    for obj in rendered(overlay):
        meta = obj["metadata"]
        namespace = meta["name"] if obj["kind"] == "Namespace" else meta.get("namespace")
        assert namespace == NAMESPACE, f"{obj['kind']}/{meta['name']} in {namespace}"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "fedssl", meta["name"]
        assert meta["labels"]["app.kubernetes.io/version"] == VERSION, meta["name"]


def test_the_mixed_fleet_recipe_renders(tmp_path: Path) -> None:
    """docs/kubernetes.md "Mixed fleets": overlays/gpu plus components/jetson in one federation."""
    rel = os.path.relpath(K8S, tmp_path)  # kustomize refuses absolute paths
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {rel}/overlays/gpu\ncomponents:\n  - {rel}/components/jetson\n")
    objs = kustomize(tmp_path)
    assert len(find(objs, "StatefulSet", "supernode")) == len(find(objs, "DaemonSet", "jetson-supernode")) == 1
    images = {c["image"] for _, _, c in containers(objs)}
    assert {FLAGS["images"]["supernode-cuda"], FLAGS["images"]["supernode-jetson"]} <= images
    for obj in objs:
        if obj["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# --- images, probes, resources, security -------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_and_the_ones_docker_builds(overlay: str) -> None:
    seen = set()
    for workload, _, c in containers(rendered(overlay)):
        name, _, tag = c["image"].rpartition(":")
        assert name and tag.startswith(VERSION) and "@" not in c["image"], f"{where(workload, c)}: {c['image']}"
        assert c["image"] == FLAGS["images"][IMAGES[overlay][workload["metadata"]["name"]]], where(workload, c)
        seen.add(workload["metadata"]["name"])
    assert seen == set(IMAGES[overlay])


def test_compose_runs_the_images_the_local_overlay_runs() -> None:
    compose = REPO / "docker" / "compose.yaml"
    if not compose.exists():
        pytest.skip("no docker/compose.yaml yet (docker/ is being built in parallel): nothing to compare with")
    import yaml

    services = yaml.safe_load(compose.read_text())["services"].values()
    # `${FEDSSL_SUPERLINK_IMAGE:-fedssl/superlink:0.1.0}` -> its default, as Compose does without .env values
    images = {re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", s["image"]) for s in services if "image" in s}
    assert {c["image"] for _, _, c in containers(rendered("local"))} <= images


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_on_ports_it_serves_on_all_interfaces(overlay: str) -> None:
    for workload, _, c in containers(rendered(overlay)):
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        args = parse_args(c["args"])
        for kind in ("readinessProbe", "livenessProbe"):
            probe = c.get(kind)
            assert probe, f"{where(workload, c)}: no {kind}"
            if "httpGet" in probe:  # Flower's GET /health on the API port: it must listen on 0.0.0.0
                port = probe["httpGet"]["port"]
                number = ports[port] if isinstance(port, str) else port
                assert args["--host"] == "0.0.0.0" and int(args["--port"]) == number, where(workload, c)
                tls = "--ssl-certfile" in args
                assert probe["httpGet"].get("scheme", "HTTP") == ("HTTPS" if tls else "HTTP"), where(workload, c)
                assert probe["httpGet"]["path"] == "/health", where(workload, c)
            elif "grpc" in probe:  # the gRPC health service of --health-server-address
                number = probe["grpc"]["port"]
                assert args["--health-server-address"] == f"0.0.0.0:{number}", where(workload, c)
            else:
                pytest.fail(f"{where(workload, c)}: {kind} is neither httpGet /health nor gRPC health")
            assert number in ports.values(), f"{where(workload, c)}: {kind} on undeclared port {number}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(overlay: str) -> None:
    for workload, _, c in containers(rendered(overlay)):
        requests, limits = c["resources"]["requests"], c["resources"]["limits"]
        for resource in ("cpu", "memory"):
            assert quantity(requests[resource]) <= quantity(limits[resource]), f"{where(workload, c)}: {resource}"
        if "nvidia.com/gpu" in limits:  # extended resources: requests must equal limits
            assert requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"]) == limits["nvidia.com/gpu"]


def test_gpu_supernodes_get_a_gpu_where_the_clientapp_trains() -> None:
    sts = find(rendered("gpu"), "StatefulSet", "supernode")[0]
    spec = pod_template(sts)["spec"]
    gpus = {c["name"]: c["resources"]["limits"].get("nvidia.com/gpu") for c in spec["containers"]}
    assert gpus == {"supernode": None, "superexec": "1"}
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    superexec = next(c for c in spec["containers"] if c["name"] == "superexec")
    data, _ = mount_of(sts, superexec, "/data/x")
    assert data["persistentVolumeClaim"] is not None  # a PVC per SuperNode (volumeClaimTemplates)


def test_jetson_supernodes_run_on_labelled_arm64_nodes_under_the_nvidia_runtime() -> None:
    ds = find(rendered("jetson"), "DaemonSet", "jetson-supernode")[0]
    spec = pod_template(ds)["spec"]
    assert spec["nodeSelector"] == {"kubernetes.io/arch": "arm64", "fedssl.io/jetson": "true"}
    assert spec["runtimeClassName"] == "nvidia"
    superexec = next(c for c in spec["containers"] if c["name"] == "superexec")
    data, _ = mount_of(ds, superexec, "/data/x")
    assert data["hostPath"] == {"path": "/var/lib/fedssl/data", "type": "Directory"}
    assert not find(rendered("jetson"), "StatefulSet")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_non_root_and_meet_the_restricted_pod_security_standard(overlay: str) -> None:
    objs = rendered(overlay)
    uses_host_path = False
    for workload, template in workloads(objs):
        spec, name = template["spec"], where(workload)
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert (sc["runAsUser"], sc["runAsGroup"]) == (FLAGS["user"]["uid"], FLAGS["user"]["gid"]) != (0, 0), name
        assert spec["automountServiceAccountToken"] is False, f"{name}: needs no Kubernetes API access"
        assert not (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")), name
        for c in spec["containers"]:
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False and csc.get("privileged", False) is False, name
            assert csc["capabilities"] == {"drop": ["ALL"]} and csc["readOnlyRootFilesystem"] is True, name
            assert csc.get("runAsUser", sc["runAsUser"]) != 0, name
        for volume in spec.get("volumes", []):
            kind = next(k for k in volume if k != "name")
            if kind == "hostPath":  # only the Jetson boxes' own images, read-only
                uses_host_path = True
                mounts = [m for c in spec["containers"] for m in c.get("volumeMounts", [])
                          if m["name"] == volume["name"]]
                assert name == "jetson-supernode" and mounts and all(m.get("readOnly") for m in mounts), name
            else:
                assert kind in {"configMap", "secret", "emptyDir", "persistentVolumeClaim", "projected",
                                "downwardAPI", "ephemeral", "csi"}, f"{name}: {kind} volume"
    labels = find(objs, "Namespace", NAMESPACE)[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == ("privileged" if uses_host_path else "restricted")
    assert labels["pod-security.kubernetes.io/warn"] == labels["pod-security.kubernetes.io/audit"] == "restricted"


# --- the flags contract (docker/flags.yaml) ------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_exactly_the_flags_of_docker_flags_yaml(overlay: str) -> None:
    roles = set()
    for workload, template, c in containers(rendered(overlay)):
        roles.add(r := role(template, c))
        section, name = FLAGS[r], f"{overlay}: {where(workload, c)}"
        assert c["command"] == [section["command"]], name
        args = parse_args(c["args"])
        missing, extra = set(section["args"]) - set(args), set(args) - set(section["args"])
        assert not missing and not extra, f"{name}: missing {sorted(missing)}, not in docker/flags.yaml {sorted(extra)}"
        for flag, expected in section["args"].items():
            if expected is True:
                assert args[flag] is True, f"{name}: {flag} takes no value"
            else:
                assert re.fullmatch(placeholder_pattern(str(expected)), str(args[flag])), (
                    f"{name}: {flag} {args[flag]!r} is not docker/flags.yaml's {expected!r}")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert FLAGS["env"].items() <= env.items(), f"{name}: env differs from docker/flags.yaml"
    assert roles == {"superlink", "superexec-serverapp", "supernode", "superexec-clientapp"}, overlay


def test_the_flags_check_fails_on_a_flag_compose_does_not_run() -> None:
    expected = FLAGS["supernode"]["args"]
    assert "--insecure" not in expected and "--max-retries" not in expected
    assert re.fullmatch(placeholder_pattern("<superlink-host>:8000"), "superlink:8000")
    assert not re.fullmatch(placeholder_pattern("<superlink-host>:8000"), "superlink:9092")
    assert not re.fullmatch(placeholder_pattern("0.0.0.0:8081"), "127.0.0.1:8081")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_addresses_and_ports_agree_across_pods_services_and_flags(overlay: str) -> None:
    objs = rendered(overlay)
    services = {s["metadata"]["name"]: s for s in find(objs, "Service")}
    superlink_pods = pod_template(find(objs, "Deployment", "superlink")[0])["metadata"]["labels"]
    for workload, template, c in containers(objs):
        args, r, name = parse_args(c["args"]), role(template, c), where(workload, c)
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if r in ("superlink", "supernode"):
            assert int(args["--port"]) == FLAGS["ports"][r] and list(ports.values()) == [FLAGS["ports"][r]], name
        if r == "supernode":  # its SuperExec is in the same pod and dials it over loopback
            own = [parse_args(x["args"])["--runtime-api-address"] for x in template["spec"]["containers"]
                   if role(template, x) == "superexec-clientapp"]
            assert own == [f"127.0.0.1:{args['--port']}"], name
        if r.startswith("superexec"):
            assert ports["health"] == FLAGS["ports"]["health"], name
        dial = args.get("--superlink") or (args["--runtime-api-address"] if r == "superexec-serverapp" else None)
        if dial:  # the SuperLink by its Service's name and port
            host, port = dial.rsplit(":", 1)
            svc = services[host]["spec"]
            assert label_match({"matchLabels": svc["selector"]}, superlink_pods), name
            assert [p["targetPort"] for p in svc["ports"] if p["port"] == int(port)] == ["api"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_file_in_the_flags_exists_in_the_pod(overlay: str) -> None:
    """Certificates, keys and secrets are keys of a mounted Secret; the database is on a volume."""
    objs = rendered(overlay)
    secrets = script_secrets(objs)
    for workload, _, c in containers(objs):
        for flag, value in parse_args(c["args"]).items():
            if not isinstance(value, str) or not value.startswith("/"):
                continue
            volume, inner = mount_of(workload, c, value)
            name = f"{where(workload, c)}: {flag} {value}"
            if "secret" not in volume:
                assert "persistentVolumeClaim" in volume or "emptyDir" in volume, name
                continue
            source = volume["secret"]
            items = {i["path"]: i["key"] for i in source.get("items", [])}
            if "$(POD_NAME)" in inner:  # one key per StatefulSet pod
                files = [inner.replace("$(POD_NAME)", f"{workload['metadata']['name']}-{i}")
                         for i in range(workload["spec"]["replicas"])]
            elif "$(NODE_NAME)" in inner:  # one key per Jetson node (create-secrets.sh --jetson)
                files = [inner.replace("$(NODE_NAME)", node) for node in JETSON_NODES]
            else:
                files = [inner]
            data = secrets[source["secretName"]].get("data") or {}
            for file in files:
                key = items.get(file) if "items" in source else file
                assert key in data, f"{name}: no key {file!r} in Secret {source['secretName']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_data_directories_in_the_environment_are_mounted(overlay: str) -> None:
    for workload, _, c in containers(rendered(overlay)):
        for name, value in env_values(c).items():
            if name.endswith("_DIR") and value.startswith("/"):
                mount_of(workload, c, value + "/x")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_in_the_args_is_defined(overlay: str) -> None:
    for workload, _, c in containers(rendered(overlay)):
        used = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(c["command"] + c["args"])))
        defined = {e["name"] for e in c.get("env", [])}
        assert used <= defined, f"{where(workload, c)}: undefined {used - defined}"


# --- Secrets, ConfigMaps, volumes --------------------------------------------------------------------
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


# --- networking -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_superlinks_clients_reach_it_and_nothing_reaches_the_rest(overlay: str) -> None:
    objs = rendered(overlay)
    deny = find(objs, "NetworkPolicy", "default-deny-ingress")[0]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    superlink = pod_template(find(objs, "Deployment", "superlink")[0])["metadata"]["labels"]
    rules = ingress_rules(objs, superlink)
    for workload, template in workloads(objs):
        labels = template["metadata"]["labels"]
        dials = any("superlink:" in " ".join(c["args"]) for c in template["spec"]["containers"])
        assert any(admits(r, "api", labels) for r in rules) == dials, where(workload)
        if labels == superlink:
            continue
        # Nobody reaches a SuperNode or a SuperExec; Prometheus (any namespace) reaches the exporter.
        own = ingress_rules(objs, labels)
        for c in template["spec"]["containers"]:
            for p in c.get("ports", []):
                reachable = any(admits(r, p["name"], None) or admits(r, p["name"], labels) for r in own)
                assert reachable == (p["name"] == "metrics"), f"{where(workload, c)}: port {p['name']}"
    for outsider in (None, {}, {"app.kubernetes.io/part-of": "fedssl"}, {"app.kubernetes.io/name": "superlink"}):
        assert not any(admits(r, "api", outsider) for r in rules), outsider


# --- run config, monitoring -------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_run_config_is_valid_and_matches_the_deployment(overlay: str, tmp_path: Path) -> None:
    from flwr.common.config import flatten_dict, parse_config_args

    from fedssl.config import RunConfig

    objs = rendered(overlay)
    path = tmp_path / "run-config.toml"
    path.write_text(find(objs, "ConfigMap", "fedssl-run-config")[0]["data"]["run-config.toml"])
    overrides = parse_config_args([str(path)])  # how `flwr run --run-config FILE.toml` reads it
    defaults = flatten_dict(PYPROJECT["tool"]["flwr"]["app"]["config"])
    assert set(overrides) <= set(defaults), f"unknown keys {set(overrides) - set(defaults)}"
    cfg = RunConfig.from_flat({**defaults, **overrides})  # raises on a bad value
    serverapp = find(objs, "Deployment", "serverapp")[0]
    template, c = pod_template(serverapp), pod_template(serverapp)["spec"]["containers"][0]
    assert "persistentVolumeClaim" in mount_of(serverapp, c, f"{cfg.outputs_dir}/run/encoder.pt")[0]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert cfg.metrics_port == FLAGS["ports"]["metrics"] == ports["metrics"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(cfg.metrics_port)
    for sts in find(objs, "StatefulSet"):  # Fashion-MNIST shards: one per SuperNode
        env = {e["name"]: e for c in pod_template(sts)["spec"]["containers"] for e in c.get("env", [])}
        ref = env["NUM_PARTITIONS"]["valueFrom"]["configMapKeyRef"]
        num = int(find(objs, "ConfigMap", ref["name"])[0]["data"][ref["key"]])
        assert num == sts["spec"]["replicas"] >= cfg.min_train_nodes, "NUM_PARTITIONS must equal replicas"


@pytest.mark.parametrize("overlay", ["gpu", "jetson"])
def test_the_servicemonitor_scrapes_the_serverapp_exporter(overlay: str) -> None:
    objs = rendered(overlay)
    monitor = find(objs, "ServiceMonitor")[0]["spec"]
    services = [s for s in find(objs, "Service") if label_match(monitor["selector"], s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in services] == ["serverapp-metrics"]
    endpoint = monitor["endpoints"][0]
    port = next(p for p in services[0]["spec"]["ports"] if p["name"] == endpoint["port"])
    assert port["port"] == FLAGS["ports"]["metrics"] and port["targetPort"] == "metrics"
    assert seconds(endpoint["scrapeTimeout"]) < seconds(endpoint["interval"])
    backends = [w for w, t in workloads(objs)
                if label_match({"matchLabels": services[0]["spec"]["selector"]}, t["metadata"]["labels"])]
    assert [w["metadata"]["name"] for w in backends] == ["serverapp"]


def test_the_local_overlay_needs_no_prometheus_operator() -> None:
    assert {o["apiVersion"].split("/")[0] for o in rendered("local")} <= {"v1", "apps", "networking.k8s.io"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grafana_dashboard_is_a_configmap_for_the_sidecar(overlay: str) -> None:
    cm = find(rendered(overlay), "ConfigMap", "fedssl-grafana-dashboard")[0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["fedssl.json"])
    assert dashboard["title"] and dashboard["panels"]
    assert len(json.dumps(cm)) < 1_000_000, "a ConfigMap holds at most 1 MiB"


def test_the_dashboard_copy_is_identical_to_its_source() -> None:
    source = REPO / "docker" / "monitoring" / "grafana" / "dashboards" / "fedssl.json"
    if not source.exists():
        pytest.skip(f"{source.relative_to(REPO)} does not exist yet (written in parallel)")
    out = subprocess.run(["bash", str(K8S / "sync-dashboard.sh"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (K8S / "base" / "monitoring" / "fedssl.json").read_bytes() == source.read_bytes()


# --- the rendered command lines, run for real -----------------------------------------------------------
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
