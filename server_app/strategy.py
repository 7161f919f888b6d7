"""The federated SSL strategy: Flower's FedAvg round loop, our validation, filtering and aggregation.

Only ``configure_train`` (to record the sample) and ``aggregate_train`` are
overridden; Flower's ``start()`` drives the rounds. A round runs one of two ways:

* **streamed** (``aggregation.streaming``, rules with a fold): each reply is screened and folded into a
  running aggregate as it arrives, then dropped (``server_app/reply_stream.py`` pulls them), so the
  ServerApp holds O(model) at any number of clients; the norm screen compares with a median known
  in advance (``screening.NormReference``);
* **collected** (the robust rules, or streaming off): every reply of the round at once, the norm screen
  against the round's own median, then the rule over the list.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedssl import reply
from fedssl.config import RunConfig
from fedssl.round_record import ClientReport, Exclusion, RoundRecord
from server_app.aggregation import build_fold, build_rule
from server_app.aggregation.base import is_float
from server_app.aggregation.fold import Fold
from server_app.reply_metrics import ReplyBounds, check_metrics, partition_of, read_metrics, scalar_report
from server_app.screening import (
    ERROR,
    MISSING_KEYS,
    ClientUpdate,
    DecodedOnAccess,
    NormReference,
    RejectedUpdate,
    check_collapse,
    check_metadata,
    check_norms,
    check_structure,
)
from server_app.step_guard import ClippedStep, StepGuard
from server_app.verification import CollapseVerifier

INT_ADVANCE_PER_STEP = 4  # BatchNorm counters advance once per forward pass; a step makes one or two


@dataclass
class RoundTally:
    """What one round's replies amounted to, filled in as they are screened (either way of running a round)."""

    replied: int = 0
    failed: int = 0
    accepted: int = 0
    clipped: int = 0
    num_examples: float = 0.0
    weighted_loss: float = 0.0
    bytes_received: int = 0
    seconds: float = 0.0  # screening and aggregating (not waiting for replies)
    norms: list[float] = field(default_factory=list)  # accepted (clipped) step norms
    excluded: list[Exclusion] = field(default_factory=list)
    clients: list[ClientReport] = field(default_factory=list)

    def accept(self, update: ClientUpdate) -> None:
        self.accepted += 1
        self.clipped += update.clipped
        self.num_examples += update.num_examples
        self.weighted_loss += update.loss * update.num_examples
        self.norms.append(update.norm)

    def reply(self, msg: Message) -> ClientReport:
        """Count a reply that carries content; its client report (filled in further by screening)."""
        self.replied += 1
        if reply.ARRAYS in msg.content.array_records:
            self.bytes_received += int(msg.content[reply.ARRAYS].count_bytes())
        record = msg.content.metric_records.get(reply.METRICS)
        report: ClientReport = {"node_id": msg.metadata.src_node_id, **scalar_report(record)}
        self.clients.append(report)
        return report

    def exclude(self, node: int, metrics: Mapping[str, Any] | None, rejected: RejectedUpdate) -> None:
        self.excluded.append(_exclusion(node, metrics, rejected))


class FedSSL(FedAvg):
    """FedAvg's sampling and messaging, with backbone validation, collapse filtering and a chosen rule."""

    def __init__(self, cfg: RunConfig, global_arrays: dict[str, np.ndarray], round_offset: int = 0,
                 verifier: CollapseVerifier | None = None) -> None:
        """``verifier``: the server's own collapse measurement of each update (None: trust the reported one)."""
        super().__init__(
            fraction_train=cfg.fraction_train, fraction_evaluate=0.0, min_train_nodes=cfg.min_train_nodes,
            min_available_nodes=cfg.min_train_nodes, weighted_by_key=reply.NUM_EXAMPLES,
            arrayrecord_key=reply.ARRAYS, configrecord_key=reply.CONFIG,
        )
        self.cfg = cfg
        self.rule = build_rule(cfg.aggregation)
        self.fold_builder = build_fold(cfg.aggregation)  # None: this rule needs the round's replies at once
        self.bounds = ReplyBounds.from_config(cfg)
        self.verifier = verifier
        self.guard = StepGuard(cfg.filter)
        self.global_arrays = global_arrays
        self.round_offset = round_offset
        self.round_started = time.perf_counter()
        self._sampling = RoundRecord(round=round_offset, sampled=0, available=0)  # of the round in flight
        self._last: RoundRecord | None = None  # of the last aggregated round

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.round_started = time.perf_counter()
        messages = list(super().configure_train(server_round + self.round_offset, arrays, config, grid))
        self._sampling = RoundRecord(round=server_round + self.round_offset, sampled=len(messages),
                                     available=len(list(grid.get_node_ids())))
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.fold_builder is not None:
            aggregated, tally = self._streamed_round(replies)
        else:
            aggregated, tally = self._collected_round(list(replies))
        new_arrays = None
        if aggregated is not None:
            self.guard.observe(tally.norms, self.global_arrays, aggregated)
            self.global_arrays = aggregated
            new_arrays = ArrayRecord(array_dict={k: Array(v) for k, v in self.global_arrays.items()})
        else:
            tally.accepted, tally.clipped, tally.num_examples, tally.weighted_loss = 0, 0, 0.0, 0.0
            log(logging.WARNING, "round %s: no update could be aggregated; the global model stays as it was",
                self._sampling.round)
        for exclusion in tally.excluded:
            log(logging.WARNING, "round %s: excluded node %s (%s): %s", self._sampling.round,
                exclusion.node_id, exclusion.reason, exclusion.detail)
        loss = tally.weighted_loss / tally.num_examples if tally.num_examples else float("nan")
        self._last = replace(
            self._sampling, round=server_round + self.round_offset, replied=tally.replied, failed=tally.failed,
            accepted=tally.accepted, clipped=tally.clipped, excluded=tuple(tally.excluded), loss=loss,
            num_examples=tally.num_examples, clients=tuple(tally.clients), bytes_received=tally.bytes_received,
            aggregation_seconds=tally.seconds,
        )
        metrics = MetricRecord({"loss": loss if tally.accepted else 0.0, "accepted": tally.accepted})
        return new_arrays, metrics

    def _streamed_round(self, replies: Iterable[Message]) -> tuple[dict[str, np.ndarray] | None, RoundTally]:
        """Screen and fold each reply as it arrives; nothing of a reply is kept once it is folded."""
        tally = RoundTally()
        fold = self.fold_builder(self.global_arrays)
        reference = NormReference(self.cfg.filter.max_norm_ratio, self.guard.recent_median())
        broken = False
        for msg in replies:
            if msg.has_error():
                tally.failed += 1
                log(logging.INFO, "round %s: error reply from node %s: %s", self._sampling.round,
                    msg.metadata.src_node_id, msg.error.reason)
                continue
            started = time.perf_counter()
            candidate = self._candidate(msg, tally, materialise=True)
            ready = reference.admit(candidate) if candidate is not None else []
            del msg, candidate  # nothing of a folded reply is held while the next one is awaited
            while ready:
                broken |= not self._fold_in(ready.pop(0), reference, fold, tally)
            # Flower's Array objects are reference cycles (each with its synced metadata), so a folded
            # reply's bytes are freed only by the cyclic collector: run its young generation now.
            gc.collect(0)
            tally.seconds += time.perf_counter() - started
        started = time.perf_counter()
        ready = reference.flush()
        while ready:
            broken |= not self._fold_in(ready.pop(0), reference, fold, tally)
        aggregated = self._fold_result(fold) if tally.accepted and not broken else None
        if broken:
            log(logging.ERROR, "round %s: folding an update failed part-way; the global model stays as it was",
                self._sampling.round)
        tally.seconds += time.perf_counter() - started
        return aggregated, tally

    def _collected_round(self, replies: list[Message]) -> tuple[dict[str, np.ndarray] | None, RoundTally]:
        """Every reply at once: the norm screen against the round's median, then the rule over the list."""
        valid, failed = self._check_and_log_replies(replies, is_train=True, validate=False)
        tally = RoundTally(failed=len(failed))
        started = time.perf_counter()
        candidates = []
        for msg in valid:
            candidate = self._candidate(msg, tally)
            if candidate is not None:
                candidates.append(candidate)
        outliers = check_norms({u.node_id: u.norm for u in candidates}, self.cfg.filter.max_norm_ratio)
        accepted = []
        for update in candidates:  # the costly checks only for what passed the cheap ones
            try:
                if update.node_id in outliers:
                    raise outliers[update.node_id]
                self._verify(update)
                accepted.append(update)
            except RejectedUpdate as rejected:
                tally.exclude(update.node_id, update.metrics, rejected)
            except Exception as exc:  # noqa: BLE001 - one malformed reply must never end the run
                tally.exclude(update.node_id, update.metrics, _error(exc))
        bound = self.guard.bound([u.norm for u in accepted])
        for update in accepted:
            self._clip(update, bound)
            tally.accept(update)
        aggregated = self._aggregate(accepted) if accepted else None
        tally.seconds = time.perf_counter() - started
        return aggregated, tally

    def round_record(self, server_round: int) -> RoundRecord:
        """The record of ``server_round`` (Flower's count, from 1 in this ServerApp), once it is aggregated.

        Raises:
            LookupError: if that round has not been aggregated (its record would be another round's).
        """
        expected = server_round + self.round_offset
        if self._last is None or self._last.round != expected:
            raise LookupError(f"round {expected} has no record yet (last aggregated: "
                              f"{self._last.round if self._last else None})")
        return self._last

    def _candidate(self, msg: Message, tally: RoundTally, materialise: bool = False) -> ClientUpdate | None:
        """The reply, counted, through the cheap checks (metrics, metadata, values, reported collapse), or None.

        Whatever one reply holds, screening it can only exclude it: an unexpected exception while reading
        it becomes an exclusion with reason ``error``, and the round goes on with the others.
        """
        report = tally.reply(msg)
        node = msg.metadata.src_node_id
        record = msg.content.metric_records.get(reply.METRICS)
        try:
            update = self._parse(node, msg, record, materialise)
            update.report = report
            return update
        except RejectedUpdate as rejected:
            tally.exclude(node, record, rejected)
        except Exception as exc:  # noqa: BLE001 - one malformed reply must never end the run
            tally.exclude(node, record, _error(exc))
        return None

    def _fold_in(self, update: ClientUpdate, reference: NormReference, fold: Fold, tally: RoundTally) -> bool:
        """Norm screen, the server's own checks, clipping, then into the running aggregate.

        Returns:
            False if folding failed part-way (the aggregate can no longer be trusted), else True.
        """
        try:
            reference.check(update.norm)
            self._verify(update)
        except RejectedUpdate as rejected:
            tally.exclude(update.node_id, update.metrics, rejected)
            return True
        except Exception as exc:  # noqa: BLE001 - one malformed reply must never end the run
            tally.exclude(update.node_id, update.metrics, _error(exc))
            return True
        self._clip(update, self.guard.bound(reference.warmup_norms))
        try:
            fold.add(update.arrays, update.num_examples, update.loss)
        except Exception:  # noqa: BLE001 - checked values cannot fail here; if they do, the round is void
            log(logging.ERROR, "round %s: folding node %s's update failed", self._sampling.round, update.node_id,
                exc_info=True)
            return False
        tally.accept(update)
        return True

    def _fold_result(self, fold: Fold) -> dict[str, np.ndarray] | None:
        try:
            return fold.result()
        except Exception:  # noqa: BLE001 - a failing rule must not end the run
            log(logging.ERROR, "round %s: aggregation rule %s failed; the global model stays as it was",
                self._sampling.round, self.cfg.aggregation.rule, exc_info=True)
            return None

    def _verify(self, update: ClientUpdate) -> None:
        """The server's own collapse measurement, then the step's direction; what was measured goes in the report."""
        if self.verifier is not None:
            measured = self.verifier.check(update.arrays, update.metrics)
            update.report.update({"server-z-std": measured.z_std, "server-rankme": measured.rankme})
        cosine = self.guard.check_direction(update.arrays, self.global_arrays, update.norm)
        if cosine is not None:
            update.report["server-cosine"] = cosine

    def _clip(self, update: ClientUpdate, bound: float | None) -> None:
        """Scale a step longer than the guard's bound down to it (the rule then sees the clipped update)."""
        if bound is not None and update.norm > bound:
            log(logging.INFO, "round %s: node %s's step clipped from %.3g to %.3g", self._sampling.round,
                update.node_id, update.norm, bound)
            update.arrays = ClippedStep(update.arrays, self.global_arrays, bound / update.norm)
            update.norm, update.clipped = bound, True

    def _parse(self, node: int, msg: Message, record: MetricRecord | None, materialise: bool = False) -> ClientUpdate:
        """One reply through every check, cheapest first: metrics, array metadata, values, collapse.

        ``materialise``: decode the arrays once into a dict (one update size, read by every later check and
        the fold) instead of on each access; a streamed round holds one reply at a time, so this is cheap.
        """
        metrics = read_metrics(record)
        check_metrics(metrics, self.bounds)
        if reply.ARRAYS not in msg.content.array_records:
            raise RejectedUpdate(MISSING_KEYS, "reply carries no arrays")
        check_metadata(msg.content[reply.ARRAYS], self.global_arrays, self.cfg.transport_dtype)
        arrays: Mapping[str, np.ndarray] = DecodedOnAccess(msg.content[reply.ARRAYS])
        if materialise:
            arrays = {key: arrays[key] for key in self.global_arrays}
        norm = check_structure(arrays, self.global_arrays, INT_ADVANCE_PER_STEP * self.bounds.max_steps)
        check_collapse(metrics, self.cfg.filter, self.cfg.model.embedding_dim)
        return ClientUpdate(node, arrays, metrics, norm)

    def _aggregate(self, accepted: list[ClientUpdate]) -> dict[str, np.ndarray] | None:
        """The rule over the accepted updates; integer buffers take the largest accepted value, whatever the
        rule (a median of counters is not a counter). None if the rule fails: the global model stays."""
        try:
            out = self.rule([u.arrays for u in accepted], [u.num_examples for u in accepted],
                            [u.loss for u in accepted], self.global_arrays)
            for key, ref in self.global_arrays.items():
                if not is_float(ref):
                    out[key] = np.asarray(np.max([u.arrays[key] for u in accepted], axis=0), dtype=ref.dtype)
            return out
        except Exception:  # noqa: BLE001 - a failing rule must not end the run
            log(logging.ERROR, "round %s: aggregation rule %s failed; the global model stays as it was",
                self._sampling.round, self.cfg.aggregation.rule, exc_info=True)
            return None

    def state(self) -> dict[str, Any]:
        return {"global_arrays": self.global_arrays, "step_guard": self.guard.state()}


def _error(exc: Exception) -> RejectedUpdate:
    return RejectedUpdate(ERROR, f"{type(exc).__name__}: {exc}"[:300])


def _exclusion(node: int, metrics: Mapping[str, Any] | None, rejected: RejectedUpdate) -> Exclusion:
    return Exclusion(node_id=node, partition_id=partition_of(metrics), reason=rejected.reason,
                     detail=rejected.detail)
