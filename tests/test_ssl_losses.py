import math

import pytest
import torch

from fedssl.config import VIDEO_ONLY_METHODS, ModelConfig, SSLConfig
from fedssl.ssl import (
    BACKBONE_PREFIX,
    METHODS,
    BarlowTwinsLoss,
    BYOLLoss,
    MoCoLoss,
    NTXentLoss,
    RotationLoss,
    SimSiamLoss,
    build_ssl_model,
)


def _views(n=64, d=32, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g)
    return z, z + noise * torch.randn(n, d, generator=g)


def _shuffled(z):
    return z[torch.randperm(len(z), generator=torch.Generator().manual_seed(1))]


@pytest.mark.parametrize("n", [8, 64])
def test_ntxent_lower_for_aligned_than_shuffled_views(n):
    a, b = _views(n)
    loss = NTXentLoss(0.2)
    assert loss(a, b) < loss(a, _shuffled(b)) - 0.5


def test_ntxent_of_identical_orthogonal_views_is_analytic():
    # 2 orthogonal samples, views identical: each anchor sees its positive at cos 1
    # and the other sample's two views at cos 0.
    t = 0.5
    z = torch.eye(2)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert NTXentLoss(t)(z, z).item() == pytest.approx(expected, rel=1e-5)


def test_ntxent_rejects_bad_arguments():
    with pytest.raises(ValueError):
        NTXentLoss(0.0)
    with pytest.raises(ValueError):
        NTXentLoss()(torch.randn(4, 8), torch.randn(5, 8))


def test_byol_and_simsiam_are_zero_when_aligned_and_symmetric():
    a, b = _views(noise=0.0)
    assert BYOLLoss()(a, b, a, b).item() == pytest.approx(0.0, abs=1e-5)
    assert SimSiamLoss()(a, b, a, b).item() == pytest.approx(0.0, abs=1e-5)
    a, b = _views()
    sa, sb = _shuffled(a), _shuffled(b)
    assert BYOLLoss()(a, b, a, b) < BYOLLoss()(a, b, sa, sb)
    assert BYOLLoss()(a, b, b, a).item() == pytest.approx(BYOLLoss()(b, a, a, b).item(), rel=1e-6)


def test_barlow_twins_lower_for_aligned_and_rejects_tiny_batches():
    a, b = _views(n=256, d=16)
    loss = BarlowTwinsLoss(0.005)
    assert loss(a, b) < loss(a, _shuffled(b)) / 5
    with pytest.raises(ValueError):
        loss(a[:1], b[:1])


def test_moco_lower_when_the_key_matches():
    q, k = _views()
    queue = torch.nn.functional.normalize(torch.randn(128, 32), dim=1)
    loss = MoCoLoss(0.2)
    assert loss(q, k, queue) < loss(q, _shuffled(k), queue)


def test_rotation_loss_is_log4_at_chance_and_zero_when_certain():
    labels = torch.tensor([0, 1, 2, 3])
    assert RotationLoss()(torch.zeros(4, 4), labels).item() == pytest.approx(math.log(4), rel=1e-6)
    assert RotationLoss()(100 * torch.eye(4), labels).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("method", [m for m in METHODS.names() if m not in VIDEO_ONLY_METHODS])
def test_every_method_trains_a_step_and_keeps_heads_off_the_backbone(method):
    """On images; the video-only pretexts are tested on clips in tests/test_video_model.py."""
    torch.manual_seed(0)
    model = build_ssl_model(SSLConfig(method=method, queue_size=64), ModelConfig())
    x = torch.rand(8, 1, 28, 28)
    before = {k: v.clone() for k, v in model.backbone_state().items()}
    loss = model(x, x.flip(-1))
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.after_step()
    assert torch.isfinite(loss)
    assert all(k.startswith(BACKBONE_PREFIX) for k in model.backbone_state())
    assert model.local_state() and not any(k.startswith(BACKBONE_PREFIX) for k in model.local_state())
    assert any(not torch.equal(before[k], v) for k, v in model.backbone_state().items())
