"""Monitoring (issue #5): the exporter, promtool on config and alert rules, the dashboard, and a real
Prometheus scraping a real federation whose every dashboard query must return data that agrees with
metrics.json.

Prometheus comes from Debian's package: on PATH, or unpacked by docker/monitoring/ci-setup.sh.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fedssl.config import RunConfig
from fedssl.round_record import Exclusion, RoundRecord
from launcher.deployment import CONNECTION, LocalDeployment
from launcher.flwr_cli import REPO, TINY_RUN, free_port
from server_app.metrics_exporter import MetricsExporter, global_norm
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


def scrape(exporter: MetricsExporter) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of everything the exporter would serve."""
    text = generate_latest(exporter.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def client(node: int, partition: float, **overrides: float) -> dict:
    return {"node_id": node, "num-examples": 100.0, "loss": 2.0, "z-std": 0.8, "rankme": 30.0, "steps": 2.0,
            "seconds": 4.0, "examples-per-s": 25.0, "peak-mem-mb": 300.0, "skipped": 0.0,
            "partition-id": partition, "device-batch-size": 64.0, "device-precision-bits": 16.0,
            "device-threads": 6.0, "device-memory-mb": 4096.0, **overrides}


def round_entry(number: int, clients: list[dict], excluded: list[tuple[int, float, str]]) -> RoundRecord:
    return RoundRecord(
        round=number, sampled=len(clients) + 1, available=len(clients) + 2, replied=len(clients), failed=1,
        accepted=len(clients) - len(excluded),
        excluded=tuple(Exclusion(node_id=n, partition_id=p, reason=r, detail="") for n, p, r in excluded),
        loss=2.0, num_examples=100 * (len(clients) - len(excluded)), clients=tuple(clients),
        bytes_received=1000 * len(clients), aggregation_seconds=0.5, knn={"digits": 0.5 + number / 10},
        eval_seconds=1.5, seconds=10.0)


def exporter(num_rounds: int = 3, **kwargs) -> MetricsExporter:
    arrays = {"w": np.full((3, 4), 2.0, np.float32), "steps": np.array([7], np.int64)}
    return MetricsExporter(RunConfig.from_flat({"num-rounds": num_rounds}), 42, lambda: arrays,
                           linger_s=0, **kwargs)


# --- the exporter, in process ----------------------------------------------------------
def test_exporter_counts_rounds_replies_and_exclusions_by_reason():
    # Prepare
    ex = exporter()
    rounds = [round_entry(1, [client(1, 0), client(2, 1), client(3, 2, **{"z-std": 0.01})], [(3, 2, "collapse")]),
              round_entry(2, [client(1, 0), client(2, 1), client(3, 2)], [(3, 2, "collapse"), (2, 1, "nan")])]
    metrics = {"best": {"digits": {"round": 2, "score": 0.7}}, "baselines": {"raw-pixels": {"digits": 0.4}}}
    # Execute
    for entry in rounds:
        ex.observe_round(entry, **metrics)
    got = scrape(ex)
    # Assert
    assert got[("fedssl_round", ())] == 2 and got[("fedssl_rounds_completed_total", ())] == 2
    assert got[("fedssl_rounds_planned", ())] == 3
    assert got[("fedssl_replies_excluded_total", (("reason", "collapse"),))] == 2
    assert got[("fedssl_replies_excluded_total", (("reason", "nan"),))] == 1
    assert got[("fedssl_replies_excluded_total", (("reason", "norm"),))] == 0
    assert got[("fedssl_round_replies_excluded", (("reason", "collapse"),))] == 1
    assert got[("fedssl_round_replies_excluded", (("reason", "nan"),))] == 1
    assert got[("fedssl_replies_total", ())] == 6 and got[("fedssl_replies_failed_total", ())] == 2
    assert got[("fedssl_replies_accepted_total", ())] == 3 and got[("fedssl_round_replies_accepted", ())] == 1
    assert got[("fedssl_received_bytes_total", ())] == 6000
    assert got[("fedssl_knn_top1", (("task", "digits"),))] == pytest.approx(0.7)
    assert got[("fedssl_knn_best_round", (("task", "digits"),))] == 2
    assert got[("fedssl_knn_baseline_top1", (("baseline", "raw-pixels"), ("task", "digits")))] == 0.4
    assert got[("fedssl_global_model_norm", ())] == pytest.approx(math.sqrt(12 * 4.0))  # int array left out
    assert got[("fedssl_device_excluded_total", (("device", "p2"), ("reason", "collapse")))] == 2
    assert got[("fedssl_device_peak_memory_bytes", (("device", "p0"),))] == 300 * 2 ** 20
    # what each device chose for itself (fedssl.local_settings)
    assert got[("fedssl_device_batch_size", (("device", "p0"),))] == 64
    assert got[("fedssl_device_precision_bits", (("device", "p0"),))] == 16
    assert got[("fedssl_device_threads", (("device", "p1"),))] == 6
    assert got[("fedssl_device_memory_bytes", (("device", "p1"),))] == 4096 * 2 ** 20
    assert got[("fedssl_client_z_std_count", ())] == 6
    assert got[("fedssl_client_z_std_bucket", (("le", "0.05"),))] == 1  # the collapsed reply of round 1
    assert got[("fedssl_run_info", (("aggregation", "fedavg"), ("client_update", "none"), ("encoder", "smallcnn"),
                                    ("run_id", "42"), ("ssl_method", "simclr")))] == 1


def test_split_mode_plans_steps_and_exports_each_window():
    cfg = RunConfig.from_flat({"mode": "split", "ssl.method": "moco", "split.steps": 40, "split.eval-every": 20})
    ex = MetricsExporter(cfg, 42, lambda: {"w": np.ones(2, np.float32)}, linger_s=0)
    assert math.isnan(scrape(ex)[("fedssl_split_queue_fill", ())])  # no window yet: a gap
    ex.observe_round(round_entry(20, [client(1, 0)], []), best={}, baselines={})
    ex.observe_split({"steps_per_s": 0.5, "bytes_up_per_step": 800.0, "bytes_down_per_step": 300.0,
                      "queue_fill": 0.25, "devices_per_step": 3.5})
    got = scrape(ex)
    assert got[("fedssl_rounds_planned", ())] == 40 and got[("fedssl_round", ())] == 20
    assert got[("fedssl_split_bytes_per_step", (("direction", "up"),))] == 800.0
    assert got[("fedssl_split_bytes_per_step", (("direction", "down"),))] == 300.0
    assert (got[("fedssl_split_steps_per_second", ())], got[("fedssl_split_queue_fill", ())],
            got[("fedssl_split_devices_per_step", ())]) == (0.5, 0.25, 3.5)


def test_before_round_one_per_round_gauges_are_gaps_not_zeros():
    got = scrape(exporter())
    assert math.isnan(got[("fedssl_round_loss", ())])
    assert math.isnan(got[("fedssl_round_replies_excluded", (("reason", "collapse"),))])
    assert got[("fedssl_replies_excluded_total", (("reason", "collapse"),))] == 0
    assert got[("fedssl_round", ())] == 0


def test_device_labels_are_capped_and_absent_devices_lose_their_gauges():
    ex = exporter(max_devices=2)
    ex.observe_round(round_entry(1, [client(10 + i, i) for i in range(5)], []), best={}, baselines={})
    ex.observe_round(round_entry(2, [client(10, 0)], []), best={}, baselines={})  # p1 did not reply in round 2
    got = scrape(ex)
    devices = {dict(labels)["device"] for name, labels in got if name == "fedssl_device_last_round"}
    assert devices == {"p0", "p1"}
    assert got[("fedssl_device_replies_unlabelled_total", ())] == 3
    assert got[("fedssl_device_last_round", (("device", "p1"),))] == 1
    assert ("fedssl_device_loss", (("device", "p1"),)) not in got
    assert got[("fedssl_device_loss", (("device", "p0"),))] == 2.0
    chosen = {dict(labels)["device"] for name, labels in got if name == "fedssl_device_batch_size"}
    assert chosen == {"p0"}  # the settings gauges follow the same cap and removal
    assert got[("fedssl_client_rankme_count", ())] == 6  # capped devices still count in the distributions


def test_devices_without_a_partition_are_labelled_by_node_id_and_skipped_replies_set_no_figures():
    ex = exporter()
    ex.observe_round(round_entry(1, [client(123, -1), client(7, 3, skipped=1.0, loss=0.0)],
                                 [(7, 3, "skipped")]), best={}, baselines={})
    got = scrape(ex)
    assert got[("fedssl_device_loss", (("device", "n123"),))] == 2.0
    assert got[("fedssl_device_last_round", (("device", "p3"),))] == 1
    assert ("fedssl_device_loss", (("device", "p3"),)) not in got
    assert got[("fedssl_client_z_std_count", ())] == 1


@pytest.mark.parametrize("name, value", [("FEDSSL_METRICS_LINGER_S", "soon"), ("FEDSSL_METRICS_MAX_DEVICES", "-1")])
def test_bad_environment_knobs_are_refused_by_name(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    cfg = RunConfig.from_flat({"metrics-port": free_port()})
    with pytest.raises(ValueError, match=name):
        MetricsExporter.from_env(cfg, 1, dict)


def test_served_over_http_and_the_last_round_waits_for_a_scrape():
    ex = exporter(num_rounds=1)
    ex.linger_s = 60.0
    port = free_port()
    ex.serve(port, "127.0.0.1")
    stop, bodies = threading.Event(), []

    def prometheus_stand_in() -> None:
        while not stop.is_set():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                bodies.append(resp.read().decode())
            stop.wait(0.2)

    thread = threading.Thread(target=prometheus_stand_in, daemon=True)
    try:
        thread.start()
        assert ex.linger()  # a scrape began while waiting
        # The last round: returns after a scrape.
        ex.observe_round(round_entry(1, [client(1, 0)], []), best={}, baselines={})
        stop.set()
        thread.join(timeout=30)
        ex.linger_s = 0.2
        assert not ex.linger()  # nobody scrapes any more: gives up
    finally:
        stop.set()
        ex.close()
    assert "fedssl_round 1.0" in bodies[-1]


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
