"""The federated SSL strategy: Flower's FedAvg round loop, our validation, filtering and aggregation.

Only ``configure_train`` (to record the sample) and ``aggregate_train`` are
overridden; Flower's ``start()`` drives the rounds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedssl import reply
from fedssl.config import RunConfig
from fedssl.round_record import ClientReport, Exclusion, RoundRecord
from server_app.aggregation import build_rule
from server_app.aggregation.base import is_float
from server_app.reply_metrics import ReplyBounds, check_metrics, partition_of, read_metrics, scalar_report
from server_app.screening import (
    ERROR,
    MISSING_KEYS,
    ClientUpdate,
    DecodedOnAccess,
    RejectedUpdate,
    check_collapse,
    check_metadata,
    check_norms,
    check_structure,
)
from server_app.step_guard import ClippedStep, StepGuard
from server_app.verification import CollapseVerifier

INT_ADVANCE_PER_STEP = 4  # BatchNorm counters advance once per forward pass; a step makes one or two


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
        replies = list(replies)
        valid, failed = self._check_and_log_replies(replies, is_train=True, validate=False)
        accepted, excluded, clients = self._screen(valid)
        started = time.perf_counter()
        new_arrays = None
        aggregated = self._aggregate(accepted) if accepted else None
        if aggregated is not None:
            self.guard.observe([u.norm for u in accepted], self.global_arrays, aggregated)
            self.global_arrays = aggregated
            new_arrays = ArrayRecord(array_dict={k: Array(v) for k, v in self.global_arrays.items()})
        else:
            accepted = []
            log(logging.WARNING, "round %s: no update could be aggregated; the global model stays as it was",
                self._sampling.round)
        total = sum(u.num_examples for u in accepted)
        loss = sum(u.loss * u.num_examples for u in accepted) / total if total else float("nan")
        self._last = replace(
            self._sampling, round=server_round + self.round_offset, replied=len(valid), failed=len(failed),
            accepted=len(accepted), clipped=sum(u.clipped for u in accepted), excluded=tuple(excluded), loss=loss,
            num_examples=total, clients=tuple(clients),
            bytes_received=int(sum(m.content[reply.ARRAYS].count_bytes() for m in valid
                                   if reply.ARRAYS in m.content.array_records)),
            aggregation_seconds=time.perf_counter() - started,
        )
        metrics = MetricRecord({"loss": loss if accepted else 0.0, "accepted": len(accepted)})
        return new_arrays, metrics

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

    def _screen(self, valid: list[Message]) -> tuple[list[ClientUpdate], list[Exclusion], list[ClientReport]]:
        """Validate every reply, drop collapsed ones and norm outliers; the reasons are recorded.

        Whatever one reply holds, screening it can only exclude it: an unexpected exception while reading
        it becomes an exclusion with reason ``error``, and the round goes on with the others.
        """
        candidates: list[ClientUpdate] = []
        excluded: list[Exclusion] = []
        clients: list[ClientReport] = []
        for msg in valid:
            node = msg.metadata.src_node_id
            record = msg.content.metric_records.get(reply.METRICS)
            clients.append({"node_id": node, **scalar_report(record)})
            try:
                candidates.append(self._parse(node, msg, record))
            except RejectedUpdate as rejected:
                excluded.append(_exclusion(node, record, rejected))
            except Exception as exc:  # noqa: BLE001 - one malformed reply must never end the run
                excluded.append(_exclusion(node, record, RejectedUpdate(ERROR, f"{type(exc).__name__}: {exc}"[:300])))
        outliers = check_norms({u.node_id: u.norm for u in candidates}, self.cfg.filter.max_norm_ratio)
        reports = {int(c["node_id"]): c for c in clients}
        accepted = []
        for update in candidates:  # the costly checks only for what passed the cheap ones
            try:
                if update.node_id in outliers:
                    raise outliers[update.node_id]
                self._verify(update, reports[update.node_id])
                accepted.append(update)
            except RejectedUpdate as rejected:
                excluded.append(_exclusion(update.node_id, update.metrics, rejected))
            except Exception as exc:  # noqa: BLE001 - one malformed reply must never end the run
                excluded.append(_exclusion(update.node_id, update.metrics,
                                           RejectedUpdate(ERROR, f"{type(exc).__name__}: {exc}"[:300])))
        self._clip(accepted)
        for exclusion in excluded:
            log(logging.WARNING, "round %s: excluded node %s (%s): %s", self._sampling.round,
                exclusion.node_id, exclusion.reason, exclusion.detail)
        return accepted, excluded, clients

    def _verify(self, update: ClientUpdate, report: ClientReport) -> None:
        """The server's own collapse measurement, then the step's direction; what was measured goes in the report."""
        if self.verifier is not None:
            measured = self.verifier.check(update.arrays, update.metrics)
            report.update({"server-z-std": measured.z_std, "server-rankme": measured.rankme})
        cosine = self.guard.check_direction(update.arrays, self.global_arrays, update.norm)
        if cosine is not None:
            report["server-cosine"] = cosine

    def _clip(self, accepted: list[ClientUpdate]) -> None:
        """Scale every step longer than the guard's bound down to it (the rule then sees the clipped update)."""
        bound = self.guard.bound([u.norm for u in accepted])
        for update in accepted:
            if bound is not None and update.norm > bound:
                log(logging.INFO, "round %s: node %s's step clipped from %.3g to %.3g", self._sampling.round,
                    update.node_id, update.norm, bound)
                update.arrays = ClippedStep(update.arrays, self.global_arrays, bound / update.norm)
                update.norm, update.clipped = bound, True

    def _parse(self, node: int, msg: Message, record: MetricRecord | None) -> ClientUpdate:
        """One reply through every check, cheapest first: metrics, array metadata, values, collapse."""
        metrics = read_metrics(record)
        check_metrics(metrics, self.bounds)
        if reply.ARRAYS not in msg.content.array_records:
            raise RejectedUpdate(MISSING_KEYS, "reply carries no arrays")
        check_metadata(msg.content[reply.ARRAYS], self.global_arrays, self.cfg.transport_dtype)
        arrays = DecodedOnAccess(msg.content[reply.ARRAYS])
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


def _exclusion(node: int, metrics: Mapping[str, Any] | None, rejected: RejectedUpdate) -> Exclusion:
    return Exclusion(node_id=node, partition_id=partition_of(metrics), reason=rejected.reason,
                     detail=rejected.detail)
