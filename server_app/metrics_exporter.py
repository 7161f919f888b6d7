"""Prometheus exporter of a run: one scrape endpoint in the ServerApp process, alive for the whole run.

Flower exports no metrics. A ClientApp lives for one message, so a scrape
endpoint there would vanish between scrapes: the per-device figures travel in
each reply (``fedssl/reply.py``) and are exported here, under a ``device``
label capped at ``max_devices`` distinct values. Every name starts with
``fedssl_``; docs/monitoring.md lists them and the dashboard panels built on them.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flwr.common.logger import log
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from fedssl import reply
from fedssl.config import RunConfig
from fedssl.round_record import RoundRecord
from server_app.screening import REASONS

ADDR_ENV, LINGER_ENV, MAX_DEVICES_ENV = "FEDSSL_METRICS_ADDR", "FEDSSL_METRICS_LINGER_S", "FEDSSL_METRICS_MAX_DEVICES"
DEFAULT_ADDR, DEFAULT_LINGER_S, DEFAULT_MAX_DEVICES = "0.0.0.0", 30.0, 64
BIND_RETRY_S = 60.0  # the previous run's ServerApp may still hold the port for a few seconds
Z_STD_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25)  # 1.0 healthy, 0.0 collapsed
RANKME_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # 1 collapsed, up to min(batch, dim)
MIB = 2 ** 20

# Per-device gauges: (metric suffix, help, reply key, scale to base units).
DEVICE_GAUGES = (
    ("loss", "Local SSL loss of the device's last reply", reply.LOSS, 1.0),
    ("examples", "Examples the device trained on in its last round", reply.NUM_EXAMPLES, 1.0),
    ("examples_per_second", "Local training throughput of the device", reply.EXAMPLES_PER_S, 1.0),
    ("train_duration_seconds", "Local training time of the device's last round", reply.SECONDS, 1.0),
    ("peak_memory_bytes", "Peak resident memory of the device's ClientApp", reply.PEAK_MEM_MB, MIB),
    ("z_std", "Embedding std x sqrt(dim) on the device's images (1 healthy, 0 collapsed)", reply.Z_STD, 1.0),
    ("rankme", "Effective rank of the device's embeddings (1 collapsed)", reply.RANKME, 1.0),
    ("batch_size", "Batch size the device chose for itself (train.batch-size capped by its memory)",
     reply.DEVICE_BATCH_SIZE, 1.0),
    ("precision_bits", "Arithmetic the device trained in: 32 (fp32) or 16 (bf16/fp16 autocast)",
     reply.DEVICE_PRECISION_BITS, 1.0),
    ("threads", "Torch threads the device trained with", reply.DEVICE_THREADS, 1.0),
    ("memory_bytes", "Memory the device measured (or was told) it has", reply.DEVICE_MEMORY_MB, MIB),
)


class MetricsExporter:
    """Round observer that keeps Prometheus metrics of the run in a private registry and serves them.

    Args:
        cfg: the run's configuration (planned rounds, probe tasks, labels of ``fedssl_run_info``).
        run_id: Flower's run id, a label of ``fedssl_run_info``.
        global_arrays: returns the current global model, for ``fedssl_global_model_norm``.
        round_offset: rounds already done before a resume.
        max_devices: distinct ``device`` label values at most; later devices only count in the fleet figures.
        linger_s: after the last round, wait up to this long for one scrape so that it is not lost.
    """

    def __init__(self, cfg: RunConfig, run_id: int | str, global_arrays: Callable[[], Mapping[str, np.ndarray]],
                 round_offset: int = 0, max_devices: int = DEFAULT_MAX_DEVICES,
                 linger_s: float = DEFAULT_LINGER_S) -> None:
        self.cfg = cfg
        self.global_arrays = global_arrays
        self.max_devices = max_devices
        self.linger_s = linger_s
        self.devices: dict[tuple[str, int], str] = {}  # (kind, id) -> label, first come first labelled
        self.registry = CollectorRegistry()
        self.scrapes = _ScrapeClock()
        self.registry.register(self.scrapes)
        self._server: Any = None
        self._closed = threading.Event()
        self._define(self.registry)
        self.run_info.info({"run_id": str(run_id), "ssl_method": cfg.ssl.method, "encoder": cfg.model.encoder,
                            "aggregation": cfg.aggregation.rule, "client_update": cfg.client_update})
        self.planned = cfg.split.steps if cfg.mode == "split" else cfg.num_rounds  # split: a "round" is a step
        self.rounds_planned.set(self.planned)
        self.round.set(round_offset)
        self.last_round_time.set(time.time())  # the run's start until round 1 ends
        for gauge in (self.round_seconds, self.aggregation_seconds, self.evaluation_seconds, self.nodes_available,
                      self.nodes_sampled, self.round_replies, self.round_failed, self.round_accepted, self.loss,
                      self.examples, self.received_bytes, self.split_steps_per_s, self.split_queue_fill,
                      self.split_devices, self.split_bytes.labels("up"), self.split_bytes.labels("down")):
            gauge.set(math.nan)  # no round yet: a gap on the dashboard, not a misleading 0
        for reason in REASONS:  # every reason exists from the start: increase() sees the first exclusion
            self.excluded_total.labels(reason)
            self.round_excluded.labels(reason).set(math.nan)
        self.model_norm.set(global_norm(global_arrays()))

    @classmethod
    def from_env(cls, cfg: RunConfig, run_id: int | str, global_arrays: Callable[[], Mapping[str, np.ndarray]],
                 round_offset: int = 0) -> MetricsExporter:
        """Build and serve on ``FEDSSL_METRICS_ADDR`` (default 0.0.0.0) at run config ``metrics-port``.

        ``FEDSSL_METRICS_LINGER_S`` (default 30) and ``FEDSSL_METRICS_MAX_DEVICES`` (default 64) tune it.
        Raises:
            ValueError: if one of these variables is not a number or is negative.
        """
        exporter = cls(cfg, run_id, global_arrays, round_offset,
                       max_devices=int(_env_number(MAX_DEVICES_ENV, DEFAULT_MAX_DEVICES)),
                       linger_s=_env_number(LINGER_ENV, DEFAULT_LINGER_S))
        exporter.serve(cfg.metrics_port, os.environ.get(ADDR_ENV, DEFAULT_ADDR))
        return exporter

    # --- metrics -----------------------------------------------------------------
    def _define(self, r: CollectorRegistry) -> None:
        self.run_info = Info("fedssl_run", "The run this ServerApp serves", registry=r)
        self.rounds_planned = Gauge("fedssl_rounds_planned", "Rounds the run is configured for", registry=r)
        self.round = Gauge("fedssl_round", "Last completed round (rounds before a resume included)", registry=r)
        self.rounds_total = Counter("fedssl_rounds_completed", "Rounds completed by this ServerApp", registry=r)
        self.last_round_time = Gauge("fedssl_last_round_timestamp_seconds",
                                     "Unix time the last round ended (the run's start before round 1)", registry=r)
        self.round_seconds = Gauge("fedssl_round_duration_seconds", "Wall time of the last round", registry=r)
        self.aggregation_seconds = Gauge("fedssl_aggregation_duration_seconds",
                                         "Time spent aggregating the last round's updates", registry=r)
        self.evaluation_seconds = Gauge("fedssl_evaluation_duration_seconds",
                                        "Time spent on the kNN probes after the last round", registry=r)
        self.nodes_available = Gauge("fedssl_round_nodes_available", "Nodes connected when the round began",
                                     registry=r)
        self.nodes_sampled = Gauge("fedssl_round_nodes_sampled", "Nodes asked to train in the round", registry=r)
        self.round_replies = Gauge("fedssl_round_replies", "Replies received in the round", registry=r)
        self.round_failed = Gauge("fedssl_round_replies_failed", "Sampled nodes that sent no usable reply",
                                  registry=r)
        self.round_accepted = Gauge("fedssl_round_replies_accepted", "Replies aggregated in the round", registry=r)
        self.round_excluded = Gauge("fedssl_round_replies_excluded", "Replies excluded in the round, by reason",
                                    ["reason"], registry=r)
        self.replies_total = Counter("fedssl_replies", "Replies received", registry=r)
        self.failed_total = Counter("fedssl_replies_failed", "Sampled nodes that sent no usable reply", registry=r)
        self.accepted_total = Counter("fedssl_replies_accepted", "Replies aggregated", registry=r)
        self.excluded_total = Counter("fedssl_replies_excluded", "Replies excluded, by reason", ["reason"],
                                      registry=r)
        self.loss = Gauge("fedssl_round_loss", "Aggregated SSL loss of the accepted replies (weighted by examples)",
                          registry=r)
        self.examples = Gauge("fedssl_round_examples", "Examples behind the accepted replies", registry=r)
        self.received_bytes = Gauge("fedssl_round_received_bytes", "Bytes of model arrays received in the round",
                                    registry=r)
        self.received_total = Counter("fedssl_received_bytes", "Bytes of model arrays received", registry=r)
        self.model_norm = Gauge("fedssl_global_model_norm", "L2 norm of the global model's floating arrays",
                                registry=r)
        self.knn = Gauge("fedssl_knn_top1", "kNN top-1 accuracy of the global encoder per probe task", ["task"],
                         registry=r)
        self.knn_best = Gauge("fedssl_knn_best_top1", "Best kNN top-1 so far per probe task", ["task"], registry=r)
        self.knn_best_round = Gauge("fedssl_knn_best_round", "Round of the best kNN top-1 per probe task", ["task"],
                                    registry=r)
        self.knn_baseline = Gauge("fedssl_knn_baseline_top1", "kNN top-1 of the raw-pixel and random-init baselines",
                                  ["task", "baseline"], registry=r)
        self.z_std_hist = Histogram("fedssl_client_z_std", "Clients' embedding std x sqrt(dim), one per reply",
                                    buckets=Z_STD_BUCKETS, registry=r)
        self.rankme_hist = Histogram("fedssl_client_rankme", "Clients' effective embedding rank, one per reply",
                                     buckets=RANKME_BUCKETS, registry=r)
        self.device = {key: (Gauge(f"fedssl_device_{name}", text, ["device"], registry=r), scale)
                       for name, text, key, scale in DEVICE_GAUGES}
        self.device_last_round = Gauge("fedssl_device_last_round", "Last round in which the device replied",
                                       ["device"], registry=r)
        self.device_excluded = Counter("fedssl_device_excluded", "Replies of the device excluded, by reason",
                                       ["device", "reason"], registry=r)
        self.split_steps_per_s = Gauge("fedssl_split_steps_per_second",
                                       "Split mode: server steps per second over the last window", registry=r)
        self.split_bytes = Gauge("fedssl_split_bytes_per_step", "Split mode: mean bytes per step over the last "
                                 "window (up: activations; down: gradients and stems)", ["direction"], registry=r)
        self.split_queue_fill = Gauge("fedssl_split_queue_fill", "Split mode: fraction of the MoCo queue holding "
                                      "real keys", registry=r)
        self.split_devices = Gauge("fedssl_split_devices_per_step", "Split mode: mean devices whose activations "
                                   "entered a step over the last window", registry=r)
        self.devices_unlabelled = Counter("fedssl_device_replies_unlabelled",
                                          "Replies from devices beyond the device label cap", registry=r)

    # --- the observer --------------------------------------------------------------
    def observe_round(self, record: RoundRecord, best: Mapping[str, Mapping[str, float]],
                      baselines: Mapping[str, Mapping[str, float]]) -> None:
        """Record a closed round; ``best`` and ``baselines`` are the run's so far (as in metrics.json)."""
        excluded = [e.reason if e.reason in REASONS else "other" for e in record.excluded]
        self.round_seconds.set(record.seconds)
        self.aggregation_seconds.set(record.aggregation_seconds)
        self.evaluation_seconds.set(record.eval_seconds)
        self.nodes_available.set(record.available)
        self.nodes_sampled.set(record.sampled)
        for gauge, counter, value in ((self.round_replies, self.replies_total, record.replied),
                                      (self.round_failed, self.failed_total, record.failed),
                                      (self.round_accepted, self.accepted_total, record.accepted)):
            gauge.set(value)
            counter.inc(value)
        for reason in set(REASONS) | set(excluded):
            self.round_excluded.labels(reason).set(excluded.count(reason))
            self.excluded_total.labels(reason).inc(excluded.count(reason))
        self.loss.set(record.loss)
        self.examples.set(record.num_examples)
        self.received_bytes.set(record.bytes_received)
        self.received_total.inc(record.bytes_received)
        self.model_norm.set(global_norm(self.global_arrays()))
        self._observe_knn(record, best, baselines)
        self._observe_devices(record)
        # Last: a scrape that sees the new round number sees everything else of that round too.
        self.last_round_time.set(time.time())
        self.rounds_total.inc()
        self.round.set(record.round)
        if record.round >= self.planned:
            self.linger()

    def observe_split(self, window: Mapping[str, float]) -> None:
        """Record a split-mode window (``server_app/split_loop.py``: ``SplitTrainer.window``)."""
        self.split_steps_per_s.set(window["steps_per_s"])
        self.split_bytes.labels("up").set(window["bytes_up_per_step"])
        self.split_bytes.labels("down").set(window["bytes_down_per_step"])
        self.split_queue_fill.set(window["queue_fill"])
        self.split_devices.set(window["devices_per_step"])

    def _observe_knn(self, record: RoundRecord, best: Mapping[str, Mapping[str, float]],
                     baselines: Mapping[str, Mapping[str, float]]) -> None:
        for task, score in record.knn.items():
            self.knn.labels(task).set(score)
        for task, top in best.items():
            self.knn_best.labels(task).set(top["score"])
            self.knn_best_round.labels(task).set(top["round"])
        for baseline, scores in baselines.items():
            for task, score in scores.items():
                self.knn_baseline.labels(task, baseline).set(score)

    def _observe_devices(self, record: RoundRecord) -> None:
        seen: set[str] = set()
        for client in record.clients:
            if client.get(reply.SKIPPED, 0.0):
                trained = False
            else:
                trained = True
                for hist, key in ((self.z_std_hist, reply.Z_STD), (self.rankme_hist, reply.RANKME)):
                    if math.isfinite(client.get(key, math.nan)):
                        hist.observe(client[key])
            label = self.device_label(client["node_id"], client.get(reply.PARTITION_ID, -1.0))
            if label is None:
                self.devices_unlabelled.inc()
                continue
            self.device_last_round.labels(label).set(record.round)
            if trained:
                seen.add(label)
                for key, (gauge, scale) in self.device.items():
                    gauge.labels(label).set(client.get(key, math.nan) * scale)
        for gone in {lb for lb in self.devices.values() if lb not in seen}:  # no stale values of absent devices
            for gauge, _ in self.device.values():
                _remove(gauge, gone)
        for e in record.excluded:
            label = self.device_label(e.node_id, e.partition_id)
            if label is not None:
                self.device_excluded.labels(label, e.reason if e.reason in REASONS else "other").inc()

    def device_label(self, node_id: int, partition_id: float) -> str | None:
        """``p<partition-id>`` for simulated shards, ``n<node-id>`` for devices with their own data.

        Partition ids are bounded by ``num-partitions`` and survive a SuperNode restart; Flower's
        node ids do not. Returns None once ``max_devices`` labels are taken by other devices.
        """
        key = ("p", int(partition_id)) if partition_id is not None and partition_id >= 0 else ("n", int(node_id))
        if key not in self.devices:
            if len(self.devices) >= self.max_devices:
                return None
            self.devices[key] = f"{key[0]}{key[1]}"
        return self.devices[key]

    # --- serving -------------------------------------------------------------------
    def serve(self, port: int, addr: str = DEFAULT_ADDR) -> None:
        """Serve ``/metrics`` on ``addr:port``; if the port is taken, keep trying in the background."""

        def bind(retry_until: float) -> None:
            while not self._closed.is_set():
                try:
                    self._server, _ = start_http_server(port, addr, registry=self.registry)
                    log(logging.INFO, "[fedssl] Prometheus metrics on http://%s:%d/metrics", addr, port)
                    return
                except OSError as exc:
                    if time.monotonic() > retry_until:
                        log(logging.WARNING, "[fedssl] no metrics for this run: cannot listen on %s:%d (%s)",
                            addr, port, exc)
                        return
                self._closed.wait(1.0)

        try:
            self._server, _ = start_http_server(port, addr, registry=self.registry)
            log(logging.INFO, "[fedssl] Prometheus metrics on http://%s:%d/metrics", addr, port)
        except OSError:
            threading.Thread(target=bind, args=(time.monotonic() + BIND_RETRY_S,), daemon=True,
                             name="fedssl-metrics-bind").start()

    def linger(self) -> bool:
        """Wait until a scrape began after now (so Prometheus has the last round), at most ``linger_s``."""
        if self.linger_s <= 0 or self._server is None:
            return False
        return self.scrapes.wait_for_next(self.linger_s)

    def close(self) -> None:
        self._closed.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _ScrapeClock:
    """A collector without metrics that counts scrapes; registered first, it runs as a scrape begins."""

    def __init__(self) -> None:
        self.count = 0
        self.cond = threading.Condition()

    def describe(self) -> list:
        return []

    def collect(self) -> list:
        with self.cond:
            self.count += 1
            self.cond.notify_all()
        return []

    def wait_for_next(self, timeout: float) -> bool:
        with self.cond:
            start = self.count
            return self.cond.wait_for(lambda: self.count > start, timeout)


def global_norm(arrays: Mapping[str, np.ndarray]) -> float:
    """L2 norm over the floating arrays of a model (integer buffers such as counters left out)."""
    total = 0.0
    for value in arrays.values():
        if np.issubdtype(value.dtype, np.floating):
            flat = value.astype(np.float64).ravel()
            total += float(np.dot(flat, flat))
    return math.sqrt(total)


def _remove(gauge: Gauge, label: str) -> None:
    try:
        gauge.remove(label)
    except KeyError:
        pass


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw.strip() else float(default)
    except ValueError:
        raise ValueError(f"environment variable {name} = {raw!r} is not a number") from None
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"environment variable {name} = {raw!r} must be a finite number >= 0")
    return value
