"""Monitoring (issue #5): promtool on config and alert rules, the dashboard, and a real Prometheus
scraping a real federation whose every dashboard query must return data that agrees with metrics.json.
The exporter's own tests are in tests/test_metrics_exporter.py.

Prometheus comes from Debian's package: on PATH, or unpacked by docker/monitoring/ci-setup.sh.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import yaml

from launcher.deployment import CONNECTION, LocalDeployment
from launcher.flwr_cli import REPO, TINY_RUN, free_port
from server_app.metrics_exporter import global_norm
from server_app.screening import REASONS

MONITORING = REPO / "docker" / "monitoring"
PROMETHEUS_YML = MONITORING / "prometheus" / "prometheus.yml"
RULES = MONITORING / "prometheus" / "rules" / "fedssl.rules.yml"
RULE_TESTS = MONITORING / "prometheus" / "tests" / "fedssl.rules.test.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "fedssl.json"
GENERATOR = MONITORING / "grafana" / "fedssl_dashboard.py"


# --- helpers -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prometheus_bin() -> Path:
    """Debian's prometheus binary (promtool beside it), unpacked by ci-setup.sh if it is not on PATH."""
    found = shutil.which("prometheus")
    if found and shutil.which("promtool"):
        return Path(found)
    out = subprocess.run(["bash", str(MONITORING / "ci-setup.sh")], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        pytest.fail(f"no Prometheus and docker/monitoring/ci-setup.sh failed:\n{out.stdout}\n{out.stderr}")
    return Path(out.stdout.strip().splitlines()[-1])


def promtool(prometheus_bin: Path, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(prometheus_bin.parent / "promtool"), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


# --- promtool and the dashboard -----------------------------------------------------------
def test_promtool_accepts_the_prometheus_config_and_rules(prometheus_bin):
    for args in (("check", "config", PROMETHEUS_YML), ("check", "rules", RULES)):
        out = promtool(prometheus_bin, *args)
        assert out.returncode == 0, out.stdout + out.stderr


def test_alert_rules_pass_their_promtool_unit_tests(prometheus_bin):
    out = promtool(prometheus_bin, "test", "rules", RULE_TESTS)
    assert out.returncode == 0, out.stdout + out.stderr


def test_committed_dashboard_is_what_the_generator_writes():
    pytest.importorskip("grafana_foundation_sdk", reason="dev dependency grafana-foundation-sdk not installed")
    spec = importlib.util.spec_from_file_location("fedssl_dashboard", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == DASHBOARD.read_text(), "run: python docker/monitoring/grafana/fedssl_dashboard.py"


def test_dashboard_is_provisioned_from_files_against_the_provisioned_datasource():
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    provider = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/fedssl.yaml").read_text())
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    panels = list(_panels(dashboard))
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p.get("targets") for p in panels if p["type"] != "row")
    assert [d["type"] for d in datasource["datasources"]] == ["prometheus"]
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./monitoring/grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts
    assert yaml.safe_load(PROMETHEUS_YML.read_text())["rule_files"] == ["rules/fedssl.rules.yml"]


def _panels(dashboard: dict):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(instance: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Every panel expression and every ``label_values(selector, label)`` variable, variables substituted."""
    dashboard = json.loads(DASHBOARD.read_text())
    values = {"instance": instance, "device": ".*"}  # as Grafana sends a single value: unescaped

    def substitute(text: str) -> str:
        text = re.sub(r"\$__\w+", "15s", text)  # $__rate_interval and friends
        return re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], text)

    exprs = [substitute(t["expr"]) for p in _panels(dashboard) for t in p.get("targets", []) if t.get("expr")]
    variables = [re.fullmatch(r"label_values\((.*), *(\w+)\)", substitute(v["query"])).groups()
                 for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs, variables


# --- a real Prometheus scraping a real federation ---------------------------------------------
class Prometheus:
    """Debian's Prometheus on 127.0.0.1 with a temporary data dir, our config with fast intervals."""

    def __init__(self, binary: Path, workdir: Path, target: str) -> None:
        config = yaml.safe_load(PROMETHEUS_YML.read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(RULES)]
        job = next(j for j in config["scrape_configs"] if j["job_name"] == "fedssl")
        job.update(scrape_interval="1s", static_configs=[{"targets": [target]}])
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [str(binary), f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Prometheus did not start; see {workdir / 'prometheus.log'}")
            time.sleep(0.3)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str | float) -> dict:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:  # Prometheus explains a bad query in the body
            raise AssertionError(f"{path} {params}: {err.read().decode(errors='replace')}") from None
        assert body["status"] == "success", body
        return body["data"]

    def at(self, expr: str, when: float) -> dict[tuple, float]:
        """Instant query: {labels other than name, job and instance: value}."""
        result = self.api("query", query=expr, time=when)["result"]
        return {tuple(sorted((k, v) for k, v in r["metric"].items() if k not in ("__name__", "job", "instance"))):
                float(r["value"][1]) for r in result}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


class ScrapedRun(NamedTuple):
    prom: Prometheus
    run_dir: Path
    instance: str
    start: float
    t_end: float
    serverapp_log: str


@pytest.fixture(scope="module")
def scraped_run(prometheus_bin, tmp_path_factory):
    """3 nodes (partition 2 collapses on purpose), 2 rounds, scraped every second.

    ``t_end`` is the time of the first scrape that holds the last round.
    """
    workdir = tmp_path_factory.mktemp("monitoring")
    metrics_port = free_port()
    instance = f"127.0.0.1:{metrics_port}"
    prom = Prometheus(prometheus_bin, workdir, instance)
    nodes = [{"partition-id": i, "num-partitions": 3, **({"misbehave": "collapse"} if i == 2 else {})}
             for i in range(3)]
    fed = LocalDeployment(workdir, node_configs=nodes)
    fed.env.update(FEDSSL_METRICS_ADDR="127.0.0.1", FEDSSL_METRICS_LINGER_S="60")  # reaches flwr-serverapp
    try:
        with fed:
            start = time.time()
            run_id = fed.submit({**TINY_RUN, "metrics-port": metrics_port})
            status = fed.wait(run_id, timeout=600)
            assert status == "finished:completed", fed.logs()
            # Raw samples with their scrape times: the first that holds the last round. (Instant queries
            # "now" would miss it: the scrape that failed once the exporter was gone left staleness markers.)
            samples = prom.api("query", query=f'fedssl_round{{instance="{instance}"}}[1h]')["result"]
            last = [float(t) for r in samples for t, v in r["values"] if float(v) == TINY_RUN["num-rounds"]]
            assert last, f"Prometheus never scraped round {TINY_RUN['num-rounds']}: {samples}\n{fed.logs()}"
            t_end = min(last)
            serverapp_log = fed.flwr("log", str(run_id), CONNECTION, "--show").stdout
        yield ScrapedRun(prom, fed.outputs / str(run_id), instance, start, t_end, serverapp_log)
    finally:
        prom.stop()


@pytest.mark.federation
def test_every_dashboard_query_returns_data_from_a_real_run(scraped_run):
    prom, _, instance, start, t_end, _ = scraped_run
    exprs, variables = dashboard_queries(instance)
    assert len(exprs) >= 30
    # The "Split learning" row reads gauges only a mode='split' run sets (tests/test_split_federation.py).
    split_only = [e for e in exprs if e.startswith("fedssl_split_")]
    assert len(split_only) == 4
    empty = []
    for expr in set(exprs) - set(split_only):
        now = prom.at(expr, t_end)
        span = prom.api("query_range", query=expr, start=start, end=t_end, step=2)["result"]
        if not any(math.isfinite(v) for v in now.values()) or not span:
            empty.append(expr)
    assert empty == [], f"dashboard queries without data at the end of the run: {empty}"
    for selector, label in variables:
        found = prom.api(f"label/{label}/values", **{"match[]": selector, "start": start, "end": t_end})
        assert found, f"variable label_values({selector}, {label}) is empty"


@pytest.mark.federation
def test_prometheus_agrees_with_metrics_json(scraped_run):
    prom, run_dir, instance, _, t_end, _ = scraped_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rounds, last = metrics["rounds"], metrics["rounds"][-1]
    sel = f'{{instance="{instance}"}}'

    def value(name: str, **labels: str) -> float:
        return prom.at(f"{name}{sel}", t_end)[tuple(sorted(labels.items()))]

    assert value("fedssl_round") == len(rounds) == TINY_RUN["num-rounds"]
    assert value("fedssl_rounds_completed_total") == len(rounds)
    excluded = Counter(e["reason"] for r in rounds for e in r["excluded"])
    assert excluded == {"collapse": len(rounds)}  # the misbehaving node, every round
    for reason in REASONS:
        assert value("fedssl_replies_excluded_total", reason=reason) == excluded.get(reason, 0), reason
        in_last = sum(e["reason"] == reason for e in last["excluded"])
        assert value("fedssl_round_replies_excluded", reason=reason) == in_last, reason
    assert value("fedssl_replies_total") == sum(r["replied"] for r in rounds)
    assert value("fedssl_replies_accepted_total") == sum(r["accepted"] for r in rounds)
    for name, key in (("fedssl_round_nodes_available", "available"), ("fedssl_round_nodes_sampled", "sampled"),
                      ("fedssl_round_replies", "replied"), ("fedssl_round_replies_failed", "failed"),
                      ("fedssl_round_replies_accepted", "accepted"), ("fedssl_round_examples", "num_examples"),
                      ("fedssl_round_received_bytes", "bytes_received")):
        assert value(name) == last[key], name
    assert value("fedssl_received_bytes_total") == sum(r["bytes_received"] for r in rounds)
    assert value("fedssl_round_loss") == pytest.approx(last["loss"])
    assert value("fedssl_round_duration_seconds") == pytest.approx(last["seconds"])
    for task, score in last["knn"].items():
        assert value("fedssl_knn_top1", task=task) == pytest.approx(score)
        assert value("fedssl_knn_best_top1", task=task) == pytest.approx(metrics["best"][task]["score"])
        assert value("fedssl_knn_best_round", task=task) == metrics["best"][task]["round"]
        for baseline, scores in metrics["baselines"].items():
            assert value("fedssl_knn_baseline_top1", task=task, baseline=baseline) == pytest.approx(scores[task])
    for c in last["clients"]:
        device = f"p{int(c['partition-id'])}"
        assert value("fedssl_device_z_std", device=device) == pytest.approx(c["z-std"])
        assert value("fedssl_device_rankme", device=device) == pytest.approx(c["rankme"])
        assert value("fedssl_device_last_round", device=device) == last["round"]
    assert value("fedssl_device_excluded_total", device="p2", reason="collapse") == len(rounds)
    checkpoint = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert value("fedssl_global_model_norm") == pytest.approx(global_norm(checkpoint["arrays"]), rel=1e-6)


@pytest.mark.federation
def test_alert_rules_evaluate_on_the_real_run_and_the_collapse_alert_triggers(scraped_run):
    prom, _, instance, _, t_end, _ = scraped_run
    rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == {"FedSSLRoundStalled", "FedSSLCollapsedReplies", "FedSSLKnnRegressed",
                                          "FedSSLNoReplyAccepted", "FedSSLDeviceSilent"}
    assert [r["name"] for r in rules if r["health"] != "ok"] == []
    alerts = prom.at(f'ALERTS{{instance="{instance}"}}', t_end)
    names = {dict(labels)["alertname"] for labels in alerts}
    assert "FedSSLCollapsedReplies" in names  # 1 of 3 replies collapsed > 25 %: pending (for: 1m) or firing
    assert not names & {"FedSSLRoundStalled", "FedSSLNoReplyAccepted", "FedSSLDeviceSilent"}


@pytest.mark.federation
def test_the_exporter_listened_where_the_environment_said(scraped_run):
    # FEDSSL_METRICS_ADDR travels SuperLink -> SuperExec -> flwr-serverapp: 127.0.0.1, not 0.0.0.0.
    assert f"Prometheus metrics on http://{scraped_run.instance}/metrics" in scraped_run.serverapp_log
