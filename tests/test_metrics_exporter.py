"""The Prometheus exporter of the ServerApp (issue #5), in process and over HTTP: what each round sets.

A real Prometheus scraping a real federation is in tests/test_monitoring.py.
"""

from __future__ import annotations

import math
import threading
import urllib.request

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fedssl.config import RunConfig
from fedssl.round_record import Exclusion, RoundRecord
from launcher.flwr_cli import free_port
from server_app.metrics_exporter import MetricsExporter


# --- helpers -------------------------------------------------------------------------
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
