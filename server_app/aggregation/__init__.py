"""Aggregation rules for backbone weights, chosen by run config ``aggregation.rule``.

Every rule has the signature ``rule(updates, num_examples, losses, previous) -> arrays``.
"""

from __future__ import annotations

import functools

from fedssl.config import AggregationConfig
from server_app.aggregation.base import Rule, weighted_mean
from server_app.aggregation.fedavg import fairavg, fedavg
from server_app.aggregation.ldawa import ldawa
from server_app.aggregation.loss_weighted import fedvssl, loss_weighted
from server_app.aggregation.robust import fedmedian, krum, trimmed_mean


def build_rule(cfg: AggregationConfig) -> Rule:
    """The rule named by ``cfg.rule`` with its parameters bound.

    Raises:
        ValueError: for an unknown rule.
    """
    rules: dict[str, Rule] = {
        "fedavg": fedavg,
        "fairavg": fairavg,
        "loss": loss_weighted,
        "fedvssl": functools.partial(fedvssl, alpha=cfg.alpha, beta=cfg.beta),
        "ldawa": ldawa,
        "fedmedian": fedmedian,
        "trimmedavg": functools.partial(trimmed_mean, trim_fraction=cfg.trim_fraction),
        "krum": functools.partial(krum, num_malicious=cfg.krum_byzantine),
    }
    if cfg.rule not in rules:
        raise ValueError(f"aggregation.rule = {cfg.rule!r} is not one of {sorted(rules)}")
    return rules[cfg.rule]


__all__ = ["build_rule", "fairavg", "fedavg", "fedmedian", "fedvssl", "krum", "ldawa", "loss_weighted",
           "trimmed_mean", "weighted_mean"]
