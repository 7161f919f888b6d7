"""FedU and FedEMA merges of the global backbone into a device's own."""

import pytest
import torch

from fedssl.device_merge import divergence, fedema, fedema_scale, fedu

LOCAL = {"w": torch.tensor([1.0, 1.0]), "n": torch.tensor(3)}
GLOBAL = {"w": torch.tensor([4.0, 5.0]), "n": torch.tensor(7)}


def test_divergence_is_the_l2_distance_of_float_entries():
    assert divergence(LOCAL, GLOBAL) == pytest.approx(5.0)


def test_fedu_adopts_the_global_backbone_only_below_the_threshold():
    chosen, adopted = fedu(LOCAL, GLOBAL, threshold=6.0)
    assert adopted and torch.equal(chosen["w"], GLOBAL["w"])
    chosen, adopted = fedu(LOCAL, GLOBAL, threshold=4.0)
    assert not adopted and torch.equal(chosen["w"], LOCAL["w"])


def test_fedema_autoscale_makes_the_first_mu_equal_tau_and_mixes_accordingly():
    scale = fedema_scale(LOCAL, GLOBAL, tau=0.7)
    merged, mu = fedema(LOCAL, GLOBAL, scale)
    assert mu == pytest.approx(0.7)
    torch.testing.assert_close(merged["w"], 0.7 * LOCAL["w"] + 0.3 * GLOBAL["w"])
    assert merged["n"] == GLOBAL["n"]
    _, mu_far = fedema(LOCAL, {"w": torch.tensor([40.0, 50.0]), "n": GLOBAL["n"]}, scale)
    assert mu_far == 1.0  # far from the global model: keep the local weights
