"""A real federation with a lying device: the run completes, its reply is excluded with a reason, the model is intact.

Three ``flower-supernode`` processes; partition 2 runs ``misbehave = "pretend"``: it sends a collapsed
(blind) encoder whose step is as short as an honest one and reports the collapse figures of its honest
model, so neither the norm screening nor the reported metrics can catch it: only the server's own
measurement on its probe batch does.
"""

from __future__ import annotations

import json

import pytest
import torch

from fedssl.augment import normalization
from fedssl.checkpoint import load_encoder
from fedssl.collapse import z_std
from fedssl.data.fashion_mnist import load_fashion_mnist
from fedssl.knn import embed
from launcher.deployment import LocalDeployment
from launcher.flwr_cli import TINY_RUN

pytestmark = pytest.mark.federation


def test_a_device_lying_about_its_collapse_is_excluded_and_the_model_stays_intact(tmp_path):
    nodes = [{"partition-id": i, "num-partitions": 3, **({"misbehave": "pretend"} if i == 2 else {})}
             for i in range(3)]
    with LocalDeployment(tmp_path, node_configs=nodes) as fed:
        run_dir = fed.run({**TINY_RUN, "data.max-samples": 128})
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and [r["round"] for r in metrics["rounds"]] == [1, 2]
    for r in metrics["rounds"]:
        assert [(int(e["partition_id"]), e["reason"]) for e in r["excluded"]] == [(2, "collapse")]
        assert "server-measured" in r["excluded"][0]["detail"]
        assert r["accepted"] == 2 and r["replied"] == 3
        liar = next(c for c in r["clients"] if c["partition-id"] == 2)
        assert liar["z-std"] > 0.1 and "server-z-std" not in liar  # what it claimed; never measured as healthy
        assert all(c["server-z-std"] > 0.1 for c in r["clients"] if c["partition-id"] != 2)
        assert r["knn"]["fashion-mnist"] > 0.4  # a collapsed global encoder retrieves at chance (0.1)
    encoder, _ = load_encoder(run_dir / "encoder.pt")
    assert all(torch.isfinite(p).all() for p in encoder.parameters())
    mean, std = normalization(1)
    assert z_std(embed(encoder, load_fashion_mnist("test")[0][:256], mean, std, 1)) > 0.1  # not collapsed
