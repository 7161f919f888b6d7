"""Aggregation rules for backbone weights, chosen by run config ``aggregation.rule``.

Every rule has the signature ``rule(updates, num_examples, losses, previous) -> arrays``; ``RULES``
registers each by name (adding one: its module here plus one ``RULES.add`` line). ``FOLDS`` registers
the rules that can also run as a running aggregate (``fold.py``), which lets the server fold each reply
in as it arrives instead of holding the round's replies; the robust rules have none.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from fedssl.config import AggregationConfig
from fedssl.registry import Registry
from server_app.aggregation.base import Rule
from server_app.aggregation.fedavg import ExampleWeighted, fairavg, fedavg
from server_app.aggregation.fold import FoldBuilder
from server_app.aggregation.ldawa import DivergenceAware, ldawa
from server_app.aggregation.loss_weighted import FedVSSLMix, LossWeighted, fedvssl, loss_weighted
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

# builder(aggregation config) -> the rule's fold builder (previous global -> running aggregate)
FOLDS: Registry[Callable[[AggregationConfig], FoldBuilder]] = Registry("aggregation.rule (streaming)")
FOLDS.add("fedavg", lambda cfg: ExampleWeighted)
FOLDS.add("fairavg", lambda cfg: functools.partial(ExampleWeighted, fair=True))
FOLDS.add("loss", lambda cfg: LossWeighted)
FOLDS.add("fedvssl", lambda cfg: functools.partial(FedVSSLMix, alpha=cfg.alpha, beta=cfg.beta))
FOLDS.add("ldawa", lambda cfg: DivergenceAware)


def build_rule(cfg: AggregationConfig) -> Rule:
    """The rule named by ``cfg.rule`` with its parameters bound.

    The ServerApp builds it before the first round, so an unknown name stops the run before
    any training (``fedssl.config`` cannot list these names: ``fedssl/`` imports no server code).
    Raises:
        ValueError: for an unknown rule (the message lists ``RULES``).
    """
    return RULES.get(cfg.rule)(cfg)


def build_fold(cfg: AggregationConfig) -> FoldBuilder | None:
    """The fold of ``cfg.rule`` when it has one and ``cfg.streaming`` is on; None: collect the round's replies."""
    if not cfg.streaming or cfg.rule not in FOLDS:
        return None
    return FOLDS.get(cfg.rule)(cfg)


__all__ = ["FOLDS", "RULES", "build_fold", "build_rule", "fairavg", "fedavg", "fedmedian", "fedvssl", "krum", "ldawa",
           "loss_weighted", "trimmed_mean"]
