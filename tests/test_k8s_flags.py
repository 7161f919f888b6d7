"""Kubernetes manifests (k8s/): the pods run exactly the flags of docker/flags.yaml; addresses, ports, files, variables.

No cluster: `kubectl kustomize` renders each overlay offline (tests/k8s_manifests.py).
"""

from __future__ import annotations

import re

import pytest
from k8s_manifests import (
    FLAGS,
    JETSON_NODES,
    OVERLAYS,
    env_values,
    find,
    flower_containers,
    label_match,
    mount_of,
    parse_args,
    placeholder_pattern,
    pod_template,
    rendered,
    role,
    script_secrets,
    where,
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_exactly_the_flags_of_docker_flags_yaml(overlay: str) -> None:
    roles = set()
    for workload, template, c in flower_containers(rendered(overlay)):
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
    for workload, template, c in flower_containers(objs):
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
    for workload, _, c in flower_containers(objs):
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
    for workload, _, c in flower_containers(rendered(overlay)):
        for name, value in env_values(c).items():
            if name.endswith("_DIR") and value.startswith("/"):
                mount_of(workload, c, value + "/x")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_in_the_args_is_defined(overlay: str) -> None:
    for workload, _, c in flower_containers(rendered(overlay)):
        used = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(c["command"] + c["args"])))
        defined = {e["name"] for e in c.get("env", [])}
        assert used <= defined, f"{where(workload, c)}: undefined {used - defined}"
