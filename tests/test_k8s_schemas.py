"""Kubernetes manifests (k8s/): every overlay renders and passes the Kubernetes API schemas; namespace and labels.

No cluster: `kubectl kustomize` renders each overlay offline (tests/k8s_manifests.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from k8s_manifests import (
    FLAGS,
    K8S,
    K8S_VERSION,
    NAMESPACE,
    OLDEST_K8S,
    OVERLAYS,
    SERVICEMONITOR_SCHEMA,
    VERSION,
    containers,
    find,
    kustomize,
    rendered,
)


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
