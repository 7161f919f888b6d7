"""The ServerApp main loop of ``mode = "split"`` (MocoSFL) on Flower's Message API.

Per sync period: sample a cohort of devices; per step, send ``train.split_forward`` (the stems
ride along on a device's first step of the period), run the server step over every activation
that came back (``fedssl/split/server.py``), send each device its gradient slice in
``train.split_backward``; at the period's end ask for the stems (``query.split_sync``), screen
and average them (``server_app/split_sync.py``). A device that fails or times out leaves the
cohort until the next period; the step goes on with the others. After every ``split.eval-every``
steps the whole encoder (averaged stem + trunk) is probed, and outputs and the checkpoint
(trunks, queue, optimiser, stems) are written by the same code as in full mode.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedssl.config import RunConfig
from fedssl.models.encoders import build_encoder
from fedssl.probe import load_probe_tasks
from fedssl.round_record import RoundRecord
from fedssl.split import protocol as p
from fedssl.split.build import build_split, encoder_arrays
from fedssl.split.cut import split_encoder
from fedssl.split.server import DeviceActivations, SplitServer, check_activations
from fedssl.state import to_numpy, to_torch
from fedssl.train import RoundPosition, learning_rate
from server_app.aggregation import build_rule
from server_app.evaluation import RoundEvaluator, RoundObserver
from server_app.outputs import RunOutputs
from server_app.split_sync import SyncResult, average_stems

POLL_S = 0.1  # between pulls of replies (Grid.send_and_receive sleeps 3 s, longer than a step)
EMPTY_PERIODS = 3  # periods in a row without one working device before the run gives up


@dataclass(frozen=True)
class StepStats:
    """One server step, as ``metrics.json`` (``split_steps``) and the exporter report it."""

    step: int
    devices: int  # whose activations entered the step
    failed: int  # sampled devices that failed or timed out in this step
    loss: float
    bytes_up: int  # activations received
    bytes_down: int  # gradients (and stems at a period's start) sent
    seconds: float
    queue_fill: float


def exchange(grid: Grid, messages: list[Message], timeout: float) -> list[Message]:
    """Push ``messages`` and pull their replies until all arrived or ``timeout`` passed."""
    pending = set(grid.push_messages(messages))
    replies: list[Message] = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        got = list(grid.pull_messages(pending))
        replies += got
        pending -= {m.metadata.reply_to_message_id for m in got}
        if pending:
            time.sleep(POLL_S)
    return replies


class SplitTrainer:
    """Runs sync periods; offers what :class:`RoundEvaluator` reads of a strategy (``round_record``,
    ``state``, ``round_started``, ``global_arrays``), so evaluation, outputs and the exporter are shared."""

    def __init__(self, cfg: RunConfig, grid: Grid, server: SplitServer, stems: dict[str, np.ndarray],
                 done: int = 0) -> None:
        self.cfg, self.grid, self.server, self.stems, self.done = cfg, grid, server, stems, done
        self.round_offset = 0
        self.round_started = time.perf_counter()
        self.rule = build_rule(cfg.aggregation)
        self.steps: list[StepStats] = []  # of the window since the last evaluation
        self.syncs: list[SyncResult] = []
        self.sampled = self.available = 0
        stem = split_encoder(build_encoder(cfg.model), cfg.model, cfg.split.cut)[0].eval()
        side = cfg.model.image_size
        with torch.no_grad():
            self.shape = tuple(stem(torch.zeros(1, cfg.model.in_channels, side, side)).shape[1:])
        self._empty = 0

    @property
    def global_arrays(self) -> dict[str, np.ndarray]:
        return encoder_arrays(self.stems, self.server)

    # --- one sync period -------------------------------------------------------------
    def run_period(self) -> None:
        """Sample a cohort, run up to ``split.sync-period`` steps with it, then average its stems."""
        s = self.cfg.split
        period = self.done // s.sync_period
        cohort = self._sample(period)
        fresh = set(cohort)  # devices still to receive this period's stems
        before = self.done
        for i in range(min(s.sync_period, s.steps - self.done)):
            if not cohort:
                break
            lr = learning_rate(self.cfg.train, RoundPosition(period + 1, math.ceil(s.steps / s.sync_period)),
                               i, s.sync_period)
            cohort = self._step(cohort, fresh, lr)
        self._empty = 0 if self.done > before else self._empty + 1
        if self._empty >= EMPTY_PERIODS:
            raise RuntimeError(f"no device completed a split step in {EMPTY_PERIODS} sync periods in a row")
        self._sync([n for n in cohort if n not in fresh])

    def _sample(self, period: int) -> list[int]:
        deadline = time.monotonic() + self.cfg.split.step_timeout
        nodes = sorted(self.grid.get_node_ids())
        while len(nodes) < self.cfg.min_train_nodes and time.monotonic() < deadline:
            time.sleep(1.0)
            nodes = sorted(self.grid.get_node_ids())
        k = min(len(nodes), max(self.cfg.min_train_nodes, round(self.cfg.fraction_train * len(nodes))))
        self.sampled, self.available = k, len(nodes)
        return random.Random(self.cfg.seed * 7919 + period).sample(nodes, k)

    def _step(self, cohort: list[int], fresh: set[int], lr: float) -> list[int]:
        """One server step; returns the devices that stay in the cohort (those that answered both messages)."""
        started, step = time.perf_counter(), self.done
        config = ConfigRecord({p.STEP: step, p.SEED: self.cfg.seed * 1_000_003 + step, p.LR: lr})
        stems = _record(to_numpy(to_torch(self.stems), self.cfg.transport_dtype) if fresh else {})
        forward = [_message(node, f"train.{p.FORWARD}",
                            {p.CONFIG: config, **({p.STEMS: stems} if node in fresh else {})}) for node in cohort]
        down = sum(stems.count_bytes() for node in cohort if node in fresh)
        batches, up = [], 0
        for reply in exchange(self.grid, forward, self.cfg.split.step_timeout):
            node = reply.metadata.src_node_id
            try:
                batch = _activations(reply)
                check_activations(batch, self.shape)
            except (ValueError, KeyError) as exc:
                log(logging.WARNING, "split step %d: node %s dropped (forward): %s", step, node, exc)
                continue
            up += reply.content[p.ACTIVATIONS].count_bytes()
            batches.append(batch)
        fresh -= {b.device for b in batches}
        if not batches:
            log(logging.WARNING, "split step %d: no device answered; the cohort is empty", step)
            self.steps.append(StepStats(step, 0, len(cohort), float("nan"), up, down,
                                        time.perf_counter() - started, self.server.queue_fill))
            return []
        result = self.server.step(batches, lr)
        scale = float(2 * result.images)  # the gradient of the summed loss: O(1) values, safe in float16
        grads = {node: _record(to_numpy({p.ONLINE_ACTS: g * scale}, self.cfg.transport_dtype))
                 for node, g in result.gradients.items()}
        config = ConfigRecord({**config, p.GRAD_SCALE: scale})
        down += sum(g.count_bytes() for g in grads.values())
        backward = [_message(node, f"train.{p.BACKWARD}", {p.CONFIG: config, p.GRADIENT: g})
                    for node, g in grads.items()]
        ok = {r.metadata.src_node_id for r in exchange(self.grid, backward, self.cfg.split.step_timeout)
              if not r.has_error()}
        for node in sorted(set(grads) - ok):
            log(logging.WARNING, "split step %d: node %s dropped (backward); its gradient is lost", step, node)
        self.steps.append(StepStats(step, len(batches), len(cohort) - len(ok), result.loss, up, down,
                                    time.perf_counter() - started, self.server.queue_fill))
        self.done += 1
        return [n for n in cohort if n in ok]

    def _sync(self, cohort: list[int]) -> None:
        started = time.perf_counter()
        queries = [_message(node, f"query.{p.SYNC}", {p.CONFIG: ConfigRecord({p.STEP: self.done})})
                   for node in cohort]
        replies = [r for r in exchange(self.grid, queries, self.cfg.split.step_timeout) if not r.has_error()]
        result = average_stems(replies, self.stems, self.rule, self.cfg.filter.max_norm_ratio)
        self.stems = {k: np.asarray(v) for k, v in result.stems.items()}
        result.clients = [c | {"sync_seconds": time.perf_counter() - started} for c in result.clients]
        self.syncs.append(result)
        log(logging.INFO, "[fedssl] split sync after step %d: %d/%d stems accepted", self.done, result.accepted,
            len(cohort))

    # --- what RoundEvaluator reads ---------------------------------------------------
    def round_record(self, step: int) -> RoundRecord:
        """The record of the window of steps ending at ``step`` (the run's steps so far)."""
        losses = [s.loss for s in self.steps if s.devices]
        last_sync = self.syncs[-1] if self.syncs else SyncResult(stems=self.stems)
        return RoundRecord(
            round=step, sampled=self.sampled, available=self.available,
            replied=sum(len(s.clients) for s in self.syncs), failed=sum(s.failed for s in self.steps),
            accepted=last_sync.accepted, excluded=tuple(e for s in self.syncs for e in s.excluded),
            loss=float(np.mean(losses)) if losses else float("nan"),
            num_examples=float(sum(s.devices for s in self.steps) * self.cfg.split.local_batch),
            clients=tuple(last_sync.clients),
            bytes_received=sum(s.bytes_up for s in self.steps) + sum(s.bytes_received for s in self.syncs),
        )

    def window(self) -> dict[str, Any]:
        """The window's figures for monitoring: steps/s, bytes per step each way, queue fill, devices per step."""
        steps = self.steps or [StepStats(self.done, 0, 0, float("nan"), 0, 0, 0.0, self.server.queue_fill)]
        seconds = sum(s.seconds for s in steps)
        return {"step": self.done, "steps_per_s": len(self.steps) / seconds if seconds else 0.0,
                "bytes_up_per_step": float(np.mean([s.bytes_up for s in steps])),
                "bytes_down_per_step": float(np.mean([s.bytes_down for s in steps])),
                "queue_fill": steps[-1].queue_fill, "devices_per_step": float(np.mean([s.devices for s in steps]))}

    def close_window(self) -> None:
        """Start the next window of steps (after its evaluation)."""
        self.steps, self.syncs = [], []
        self.round_started = time.perf_counter()

    def state(self) -> dict[str, Any]:
        """What the checkpoint carries besides the whole encoder: the server's state and the stems."""
        return {"split": {"stems": self.stems, "server": self.server.checkpoint()}}


def run_split(grid: Grid, cfg: RunConfig, outputs: RunOutputs,
              observers: Callable[[SplitTrainer], list[RoundObserver]]) -> None:
    """The run, fresh or resumed from ``outputs``' checkpoint; ends with ``encoder.pt`` as in full mode.

    ``observers(trainer)``: the round observers (the Prometheus exporter); an observer with an
    ``observe_split(summary)`` method is also told each window's split figures.
    """
    stems, server = build_split(cfg)
    checkpoint = outputs.load_checkpoint() if cfg.resume else None
    done = 0
    if checkpoint is not None:
        stems, done = checkpoint["split"]["stems"], checkpoint["round"]
        server.restore(checkpoint["split"]["server"])
        for key in ("split_steps", "split_windows"):
            outputs.metrics[key] = checkpoint["metrics"].get(key, [])
        log(logging.INFO, "[fedssl] split: resuming %s after step %d of %d", outputs.root, done, cfg.split.steps)
    else:
        outputs.metrics["split_steps"], outputs.metrics["split_windows"] = [], []
        outputs.write_metrics()
    trainer = SplitTrainer(cfg, grid, server, stems, done)
    watchers = observers(trainer)
    tasks = load_probe_tasks(cfg.eval, cfg.model.image_size, seed=cfg.seed)
    evaluator = RoundEvaluator(cfg, trainer, outputs, tasks, observers=watchers,  # type: ignore[arg-type]
                               total=cfg.split.steps)
    evaluator(0, _record(trainer.global_arrays))  # baselines (measured once, kept on resume)
    while trainer.done < cfg.split.steps:
        trainer.run_period()
        if trainer.done % cfg.split.eval_every and trainer.done < cfg.split.steps:
            continue
        summary = trainer.window()
        outputs.metrics["split_steps"].extend(asdict(s) for s in trainer.steps)
        outputs.metrics["split_windows"].append(summary)
        evaluator(trainer.done, _record(trainer.global_arrays))  # probes, best models, checkpoint, metrics
        trainer.close_window()
        for watcher in watchers:
            getattr(watcher, "observe_split", lambda summary: None)(summary)
        log(logging.INFO, "[fedssl] split: %.2f steps/s, %.0f B up and %.0f B down per step, %.1f devices "
            "per step, queue %.0f%% full", summary["steps_per_s"], summary["bytes_up_per_step"],
            summary["bytes_down_per_step"], summary["devices_per_step"], 100 * summary["queue_fill"])
    outputs.finish(trainer.global_arrays)


def _activations(reply: Message) -> DeviceActivations:
    if reply.has_error():
        raise ValueError(f"error reply: {reply.error.reason}")
    record = reply.content[p.ACTIVATIONS]
    acts = to_torch({k: record[k].numpy() for k in (p.ONLINE_ACTS, p.MOMENTUM_ACTS)})
    return DeviceActivations(reply.metadata.src_node_id, acts[p.ONLINE_ACTS], acts[p.MOMENTUM_ACTS])


def _message(node: int, message_type: str, content: dict[str, Any]) -> Message:
    return Message(content=RecordDict(content), dst_node_id=node, message_type=message_type)


def _record(arrays: dict[str, np.ndarray] | Iterable) -> ArrayRecord:
    return ArrayRecord(array_dict={k: Array(np.ascontiguousarray(v)) for k, v in dict(arrays).items()})
