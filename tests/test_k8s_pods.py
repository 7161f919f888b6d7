"""Kubernetes manifests (k8s/): images, probes, resources, GPU/Jetson scheduling and pod security.

No cluster: `kubectl kustomize` renders each overlay offline (tests/k8s_manifests.py).
"""

from __future__ import annotations

import re

import pytest
from k8s_manifests import (
    FLAGS,
    NAMESPACE,
    OVERLAYS,
    REPO,
    VERSION,
    containers,
    find,
    mount_of,
    parse_args,
    pod_template,
    quantity,
    rendered,
    where,
    workloads,
)

# The image each workload's containers run, per overlay (keys of docker/flags.yaml `images`).
IMAGES = {
    "local": {"superlink": "superlink", "serverapp": "superlink", "supernode": "supernode"},
    "gpu": {"superlink": "superlink", "serverapp": "superlink", "supernode": "supernode-cuda"},
    "jetson": {"superlink": "superlink", "serverapp": "superlink", "jetson-supernode": "supernode-jetson"},
}


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
        flower = c["command"][0].startswith("flower-")
        args = parse_args(c["args"]) if flower else {}
        for kind in ("readinessProbe", "livenessProbe"):
            probe = c.get(kind)
            assert probe, f"{where(workload, c)}: no {kind}"
            if not flower:  # a helper that serves no port (the supervisor): a command checks it
                assert "exec" in probe and not ports, where(workload, c)
                continue
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
