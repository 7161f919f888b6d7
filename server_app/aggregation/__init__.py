"""Aggregation rules for backbone weights, chosen by run config ``aggregation.rule``.

Every rule has the signature ``rule(updates, num_examples, losses, previous) -> arrays``; ``RULES``
registers each by name (adding one: its module here plus one ``RULES.add`` line).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from fedssl.config import AggregationConfig
from fedssl.registry import Registry
from server_app.aggregation.base import Rule, weighted_mean
from server_app.aggregation.fedavg import fairavg, fedavg
from server_app.aggregation.ldawa import ldawa
from server_app.aggregation.loss_weighted import fedvssl, loss_weighted
from server_app.aggregation.robust import fedmedian, krum, trimmed_mean

# builder(aggregation config) -> the rule with its parameters bound
RuleBuilder = Callable[[AggregationConfig], Rule]
RULES: Registry[RuleBuilder] = Registry("aggregation.rule")
RULES.add("fedavg", lambda cfg: fedavg)
RULES.add("fairavg", lambda cfg: fairavg)
RULES.add("loss", lambda cfg: loss_weighted)
RULES.add("fedvssl", lambda cfg: functools.partial(fedvssl, alpha=cfg.alpha, beta=cfg.beta))
RULES.add("ldawa", lambda cfg: ldawa)
RULES.add("fedmedian", lambda cfg: fedmedian)
RULES.add("trimmedavg", lambda cfg: functools.partial(trimmed_mean, trim_fraction=cfg.trim_fraction))
RULES.add("krum", lambda cfg: functools.partial(krum, num_malicious=cfg.krum_byzantine))


def build_rule(cfg: AggregationConfig) -> Rule:
    """The rule named by ``cfg.rule`` with its parameters bound.

    The ServerApp builds it before the first round, so an unknown name stops the run before
    any training (``fedssl.config`` cannot list these names: ``fedssl/`` imports no server code).
    Raises:
        ValueError: for an unknown rule (the message lists ``RULES``).
    """
    return RULES.get(cfg.rule)(cfg)


__all__ = ["RULES", "build_rule", "fairavg", "fedavg", "fedmedian", "fedvssl", "krum", "ldawa", "loss_weighted",
           "trimmed_mean", "weighted_mean"]
