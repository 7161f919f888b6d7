"""Kubernetes manifests (k8s/): the run config matches the deployment; the ServiceMonitor and the Grafana dashboard.

No cluster: `kubectl kustomize` renders each overlay offline (tests/k8s_manifests.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from k8s_manifests import (
    FLAGS,
    K8S,
    OVERLAYS,
    PYPROJECT,
    REPO,
    find,
    label_match,
    mount_of,
    pod_template,
    rendered,
    seconds,
    workloads,
)


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
