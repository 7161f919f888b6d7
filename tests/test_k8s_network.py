"""Kubernetes manifests (k8s/): NetworkPolicies: only the SuperLink's clients reach it, nothing reaches the rest.

No cluster: `kubectl kustomize` renders each overlay offline (tests/k8s_manifests.py).
"""

from __future__ import annotations

import pytest
from k8s_manifests import (
    OVERLAYS,
    admits,
    find,
    ingress_rules,
    pod_template,
    rendered,
    where,
    workloads,
)


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


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_prometheus_in_the_monitoring_namespace_reaches_the_exporter(overlay: str) -> None:
    objs = rendered(overlay)
    serverapp = pod_template(find(objs, "Deployment", "serverapp")[0])["metadata"]["labels"]
    peers = [peer for rule in ingress_rules(objs, serverapp) for peer in rule.get("from", [{}])]
    assert peers == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                      "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
