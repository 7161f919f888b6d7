"""One registry per concept: every registered name builds, and the allowed values come from the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedssl.config import AggregationConfig, EvalConfig, ModelConfig, RunConfig
from fedssl.data.partition import PARTITIONERS, partition
from fedssl.models.encoders import ENCODERS, build_encoder
from fedssl.probe import PROBE_TASKS, load_probe_tasks
from fedssl.registry import Registry
from fedssl.ssl import METHODS, build_ssl_model
from server_app.aggregation import RULES, build_rule


def test_a_registry_returns_what_was_registered_and_refuses_unknown_and_duplicate_names():
    # Prepare
    colours: Registry[int] = Registry("paint.colour")
    colours.add("red", 1)

    @colours.register("blue")
    def blue() -> int:
        return 2

    # Execute / Assert
    assert colours.get("red") == 1 and colours.get("blue") is blue and colours.names() == ("red", "blue")
    with pytest.raises(ValueError, match=r"run config 'paint.colour' = 'green' is not one of \['red', 'blue'\]"):
        colours.get("green")
    with pytest.raises(ValueError, match="registered twice"):
        colours.add("red", 3)


@pytest.mark.parametrize("key,registry", [("ssl.method", METHODS), ("model.encoder", ENCODERS),
                                          ("data.partition", PARTITIONERS), ("eval.tasks", PROBE_TASKS)])
def test_config_validation_lists_every_registered_name(key, registry):
    with pytest.raises(ValueError) as err:
        RunConfig.from_flat({key: "no-such-thing"})
    assert f"'{key}'" in str(err.value) and "no-such-thing" in str(err.value)
    assert all(name in str(err.value) for name in registry.names())
    assert len(registry) >= 2


def test_an_unknown_aggregation_rule_is_refused_with_the_registered_rules():
    with pytest.raises(ValueError) as err:
        build_rule(AggregationConfig(rule="fedprox"))
    assert "aggregation.rule" in str(err.value) and all(name in str(err.value) for name in RULES.names())


@pytest.mark.parametrize("name", ENCODERS.names())
def test_every_registered_encoder_builds(name):
    cfg = ModelConfig(encoder=name, embedding_dim=32, readout="pool")
    assert build_encoder(cfg).eval()(torch.rand(2, 1, 28, 28)).shape == (2, 32)


@pytest.mark.parametrize("name", PARTITIONERS.names())
def test_every_registered_partitioner_splits_without_overlap(name):
    labels = np.repeat(np.arange(10), 50)
    parts = partition(labels, 5, name, alpha=0.5, classes_per_client=2, seed=0)
    everything = np.concatenate(parts)
    assert len(parts) == 5 and len(np.unique(everything)) == len(everything) == len(labels)


@pytest.mark.parametrize("name", PROBE_TASKS.names())
def test_every_registered_probe_task_loads_labelled_gallery_and_queries(name):
    (task,) = load_probe_tasks(EvalConfig(tasks=(name,), gallery_size=100, query_size=50), image_size=28)
    assert task.name == name and task.gallery.dtype == np.uint8 and task.gallery.shape[1:] == (1, 28, 28)
    assert len(task.gallery) == len(task.gallery_labels) >= 50 and len(task.queries) == len(task.query_labels) >= 50


@pytest.mark.parametrize("name", RULES.names())
def test_every_registered_rule_keeps_identical_updates(name):
    same = {"w": np.full((2, 2), 3.0, np.float32)}
    out = build_rule(AggregationConfig(rule=name))([same, same, same, same], [1.0] * 4, [0.5] * 4, same)
    np.testing.assert_allclose(out["w"], same["w"], rtol=1e-6)


class Linear28(nn.Module):
    """A new encoder for the extension test: flatten and project."""

    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_adding_an_encoder_is_one_registration(monkeypatch):
    # Prepare: a private copy of the registry, so the new name does not outlive the test
    monkeypatch.setattr(ENCODERS, "_entries", dict(ENCODERS._entries))
    ENCODERS.add("linear28", lambda cfg: Linear28(cfg.embedding_dim))
    # Execute: the run config accepts it and an SSL model trains on it
    cfg = RunConfig.from_flat({"model.encoder": "linear28", "model.embedding-dim": 16, "model.readout": "pool"})
    model = build_ssl_model(cfg.ssl, cfg.model)
    loss = model(torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28))
    loss.backward()
    # Assert
    assert isinstance(model.backbone, Linear28) and torch.isfinite(loss)
    assert model.backbone.fc.weight.grad is not None
