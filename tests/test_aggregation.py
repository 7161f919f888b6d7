"""Each aggregation rule against its formula on small hand-made arrays."""

import numpy as np
import pytest

from fedssl.config import AggregationConfig, RunConfig
from launcher.flwr_cli import FEDVSSL_PAPER, VIDEO_RUN
from server_app.aggregation import (
    build_rule,
    fairavg,
    fedavg,
    fedmedian,
    fedvssl,
    krum,
    ldawa,
    loss_weighted,
    trimmed_mean,
)
from server_app.aggregation.ldawa import layer_cosine

A = {"w": np.array([1.0, 2.0], dtype=np.float32), "n": np.array(3, dtype=np.int64)}
B = {"w": np.array([3.0, 6.0], dtype=np.float32), "n": np.array(5, dtype=np.int64)}
C = {"w": np.array([5.0, -4.0], dtype=np.float32), "n": np.array(4, dtype=np.int64)}
PREV = {"w": np.array([1.0, 1.0], dtype=np.float32), "n": np.array(2, dtype=np.int64)}
UPDATES, N, LOSSES = [A, B, C], [1.0, 2.0, 1.0], [0.5, 1.0, 2.0]


def test_fedavg_weights_by_examples_and_keeps_the_largest_counter():
    out = fedavg(UPDATES, N, LOSSES, PREV)
    np.testing.assert_allclose(out["w"], (1 * A["w"] + 2 * B["w"] + 1 * C["w"]) / 4, rtol=1e-6)
    assert out["w"].dtype == np.float32 and out["n"] == 5 and out["n"].dtype == np.int64


def test_fairavg_is_the_plain_mean():
    np.testing.assert_allclose(fairavg(UPDATES, N, LOSSES, PREV)["w"], (A["w"] + B["w"] + C["w"]) / 3, rtol=1e-6)


def test_loss_weighting_uses_exp_minus_loss():
    w = np.exp(-np.array(LOSSES))
    expected = (w[0] * A["w"] + w[1] * B["w"] + w[2] * C["w"]) / w.sum()
    np.testing.assert_allclose(loss_weighted(UPDATES, N, LOSSES, PREV)["w"], expected, rtol=1e-5)


def test_fedvssl_mixes_fedavg_loss_weighting_and_swa():
    alpha, beta = 0.3, 0.25
    avg = fedavg(UPDATES, N, LOSSES, PREV)["w"]
    lw = loss_weighted(UPDATES, N, LOSSES, PREV)["w"]
    expected = beta * PREV["w"] + (1 - beta) * (alpha * avg + (1 - alpha) * lw)
    np.testing.assert_allclose(fedvssl(UPDATES, N, LOSSES, PREV, alpha, beta)["w"], expected, rtol=1e-5)


def test_fedvssl_alpha_changes_the_result_so_the_loss_term_is_used():
    half = fedvssl(UPDATES, N, LOSSES, PREV, alpha=0.5)["w"]
    only_fedavg = fedvssl(UPDATES, N, LOSSES, PREV, alpha=1.0)["w"]
    np.testing.assert_allclose(only_fedavg, fedavg(UPDATES, N, LOSSES, PREV)["w"], rtol=1e-6)
    assert not np.allclose(half, only_fedavg)


def test_ldawa_scales_each_layer_by_its_clipped_cosine_to_the_previous_global():
    cos = [layer_cosine(u["w"], PREV["w"]) for u in UPDATES]
    share = np.array(N) / sum(N)
    expected = sum(s * c * u["w"] for s, c, u in zip(share, cos, UPDATES))
    np.testing.assert_allclose(ldawa(UPDATES, N, LOSSES, PREV)["w"], expected, rtol=1e-5)
    assert cos[2] < cos[0] <= 1.0  # C points away from the global model and counts less


def test_layer_cosine_is_clipped_and_safe_on_zero():
    v = np.array([1.0, 2.0])
    assert layer_cosine(v, 3 * v) == pytest.approx(1.0)
    assert layer_cosine(v, -v) == pytest.approx(-1.0)
    assert layer_cosine(v, np.zeros(2)) == 0.0


def test_robust_rules_reuse_flowers_median_trimmed_mean_and_krum():
    outlier = {"w": np.array([1000.0, 1000.0], dtype=np.float32), "n": np.array(1, dtype=np.int64)}
    updates = [A, B, C, outlier]
    np.testing.assert_allclose(fedmedian(updates, [1] * 4, [0] * 4, PREV)["w"],
                               np.median([u["w"] for u in updates], axis=0))
    np.testing.assert_allclose(trimmed_mean(updates, [1] * 4, [0] * 4, PREV, trim_fraction=0.25)["w"],
                               [4.0, 4.0])  # per coordinate: drop min and max, average the middle two
    chosen = krum(updates, [1] * 4, [0] * 4, PREV, num_malicious=1)["w"]
    assert any(np.allclose(chosen, u["w"]) for u in (A, B, C))


def test_build_rule_binds_parameters_and_rejects_unknown_rules():
    rule = build_rule(AggregationConfig(rule="fedvssl", alpha=1.0))
    np.testing.assert_allclose(rule(UPDATES, N, LOSSES, PREV)["w"], fedavg(UPDATES, N, LOSSES, PREV)["w"])
    with pytest.raises(ValueError, match="fedprox"):
        build_rule(AggregationConfig(rule="fedprox"))


def test_weights_must_be_positive():
    with pytest.raises(ValueError):
        fedavg(UPDATES, [0, 0, 0], LOSSES, PREV)


def test_fedvssl_paper_preset_is_the_papers_swa_of_the_mix():
    rule = build_rule(RunConfig.from_flat({**VIDEO_RUN, **FEDVSSL_PAPER}).aggregation)
    weights = np.exp(-(np.asarray(LOSSES) - min(LOSSES)))
    fedavg_w = sum(n * u["w"] for n, u in zip(N, UPDATES)) / sum(N)
    loss_w = sum(w * u["w"] for w, u in zip(weights, UPDATES)) / weights.sum()
    mixed = 0.9 * fedavg_w + 0.1 * loss_w
    np.testing.assert_allclose(rule(UPDATES, N, LOSSES, PREV)["w"], (PREV["w"] + mixed) / 2, rtol=1e-5)


@pytest.mark.parametrize("rule", ["fedavg", "fairavg", "loss", "fedvssl", "ldawa"])
def test_every_streamable_rule_folds_one_update_at_a_time_to_its_batch_result_in_any_order(rule):
    """What a streamed round computes (each reply folded as it arrives, arrival order unknown) is the rule."""
    from server_app.aggregation import FOLDS

    cfg = AggregationConfig(rule=rule, alpha=0.3, beta=0.25)
    rng = np.random.default_rng(1)
    updates = [{"w": rng.normal(size=(3, 2)).astype(np.float32), "n": np.array(k, np.int64)} for k in range(6)]
    n, losses = [float(k + 1) for k in range(6)], [float(v) for v in rng.uniform(0.1, 3.0, 6)]
    previous = {"w": rng.normal(size=(3, 2)).astype(np.float32), "n": np.array(0, np.int64)}
    expected = build_rule(cfg)(updates, n, losses, previous)
    fold = FOLDS.get(rule)(cfg)(previous)
    for k in (4, 0, 5, 2, 1, 3):
        fold.add(updates[k], n[k], losses[k])
    got = fold.result()
    np.testing.assert_allclose(got["w"], expected["w"], rtol=1e-5, atol=1e-6)
    assert got["w"].dtype == np.float32 and int(got["n"]) == int(expected["n"])


def test_loss_weights_fold_without_overflow_whatever_the_order_of_losses():
    """exp(-L) of a loss of 0 after one of 900 overflows unless the fold rescales (an online softmax)."""
    from server_app.aggregation.loss_weighted import LossWeighted

    fold = LossWeighted(PREV)
    for update, loss in ((A, 900.0), (B, 0.0), (C, 1.0)):
        fold.add(update, 1.0, loss)
    w = np.exp(-np.array([900.0, 0.0, 1.0]))
    np.testing.assert_allclose(fold.result()["w"], (w[0] * A["w"] + w[1] * B["w"] + w[2] * C["w"]) / w.sum(),
                               rtol=1e-6)
    assert np.isfinite(fold.result()["w"]).all()


def test_an_unusable_weight_is_refused_before_anything_is_folded():
    from server_app.aggregation.base import WeightedSum

    total = WeightedSum(PREV)
    total.add(A, 1.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="weight"):
            total.add(B, bad)
    np.testing.assert_allclose(total.mean()["w"], A["w"])  # B left no trace
    with pytest.raises(ValueError, match="no updates"):
        WeightedSum(PREV).mean()


def test_only_rules_with_a_fold_stream():
    from server_app.aggregation import FOLDS, RULES, build_fold

    assert set(FOLDS.names()) == set(RULES.names()) - {"fedmedian", "trimmedavg", "krum"}
    assert build_fold(AggregationConfig(rule="fedavg")) is not None
    assert build_fold(AggregationConfig(rule="krum")) is None  # needs every update at once
    assert build_fold(AggregationConfig(rule="fedavg", streaming=False)) is None
