"""Split learning (MocoSFL) maths: the cut, the shared queue, the server step and the device step."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

from fedssl.config import ModelConfig, RunConfig, SplitConfig, SSLConfig, TrainConfig
from fedssl.models.encoders import build_encoder
from fedssl.split.build import build_split, encoder_arrays
from fedssl.split.cut import join_states, split_encoder
from fedssl.split.device import SplitDevice, step_views
from fedssl.split.queue import FeatureQueue
from fedssl.split.server import DeviceActivations, SplitServer, check_activations
from fedssl.ssl.moco import MoCoLoss
from fedssl.state import strip_prefix, to_torch

SMALL = ModelConfig()  # SmallCNN, block-3 read-out, 28x28 grey
POOL = ModelConfig(readout="pool", embedding_dim=64)
BLOCK2 = ModelConfig(readout="block2", embedding_dim=3136)
RESNET = ModelConfig(encoder="resnet18", in_channels=3, image_size=32, readout="pool", embedding_dim=512,
                     small_stem=False)
SSL = SSLConfig(method="moco", proj_dim=16, hidden_dim=32, temperature=0.2, momentum=0.9)


@pytest.mark.parametrize("model,cut", [(SMALL, 1), (SMALL, 2), (SMALL, 3), (POOL, 1), (POOL, 3),
                                       (BLOCK2, 1), (BLOCK2, 2), (RESNET, 1), (RESNET, 4)])
def test_stem_then_trunk_is_the_whole_encoder(model, cut):
    torch.manual_seed(0)
    encoder = build_encoder(model).eval()
    x = torch.randn(3, model.in_channels, model.image_size, model.image_size)
    stem, trunk = split_encoder(encoder, model, cut)
    with torch.no_grad():
        h = stem(x)
        assert torch.equal(trunk(h), encoder(x))
        assert torch.equal(trunk.ssl_features(h), encoder.ssl_features(x))
    joined = join_states(stem.state_dict(), trunk.state_dict())
    assert list(sorted(joined)) == sorted(encoder.state_dict())
    rebuilt = build_encoder(model).eval()
    rebuilt.load_state_dict(joined, strict=True)
    assert torch.equal(rebuilt(x), encoder(x).detach())


@pytest.mark.parametrize("cut", [0, 4])
def test_a_cut_that_leaves_no_stem_or_no_trunk_is_refused(cut):
    with pytest.raises(ValueError, match="split.cut"):
        split_encoder(build_encoder(SMALL), SMALL, cut)


def test_a_cut_after_the_read_out_block_is_refused_before_training():
    with pytest.raises(ValueError, match="'split.cut' = 3 puts the read-out .*cut at most 2 blocks"):
        split_encoder(build_encoder(BLOCK2), BLOCK2, 3)
    with pytest.raises(ValueError, match="cut at most 2 blocks"):
        RunConfig.from_flat({"mode": "split", "split.cut": 3, "model.readout": "block2",
                             "model.embedding-dim": 3136, "ssl.method": "moco"})


def test_queue_is_first_in_first_out_and_counts_its_fill():
    queue = FeatureQueue(5, 2)
    keys = torch.arange(14, dtype=torch.float32).view(7, 2)
    queue.enqueue(keys[:3])
    assert queue.fill == 0.6 and torch.equal(queue.keys[:3], keys[:3])
    queue.enqueue(keys[3:7])  # wraps: rows 3, 4 then 0, 1 are overwritten
    assert queue.fill == 1.0 and queue.ptr == 2
    assert torch.equal(queue.keys, torch.stack([keys[5], keys[6], keys[2], keys[3], keys[4]]))
    queue.enqueue(torch.arange(24, dtype=torch.float32).view(12, 2))  # more than it holds: the newest 5
    assert sorted(queue.keys[:, 0].tolist()) == [14.0, 16.0, 18.0, 20.0, 22.0]
    restored = FeatureQueue.from_state(queue.state_dict())
    assert torch.equal(restored.keys, queue.keys) and (restored.ptr, restored.filled) == (queue.ptr, 5)


def _devices(n: int, cut: int = 1) -> list[SplitDevice]:
    torch.manual_seed(1)
    devices = []
    for _ in range(n):
        device = SplitDevice(SMALL, cut, momentum=0.9)
        with torch.no_grad():  # devices hold different stems between syncs
            for p in device.online.parameters():
                p.add_(0.05 * torch.randn_like(p))
        devices.append(device)
    return devices


def _server(sharing: bool = True) -> SplitServer:
    torch.manual_seed(2)
    trunk = split_encoder(build_encoder(SMALL), SMALL, 1)[1]
    return SplitServer(trunk, SSL, SplitConfig(queue_size=64, feature_sharing=sharing),
                       TrainConfig(optimizer="sgd", lr=0.1, weight_decay=0.0))


def _views(sizes: list[int]) -> list[torch.Tensor]:
    images = np.random.default_rng(0).integers(0, 255, size=(40, 1, 28, 28), dtype=np.uint8)
    return [step_views(images, b, SMALL, TrainConfig(), seed=10 + i) for i, b in enumerate(sizes)]


def test_gradient_slices_equal_a_centralized_backward_over_the_concatenated_batch():
    sizes = [2, 3, 4]
    devices, server, views = _devices(3), _server(), _views(sizes)
    # Reference: the same stems and trunk as one autograd graph over the concatenated batch.
    ref_stems = [copy.deepcopy(d.online).train() for d in devices]
    ref_trunk, ref_proj = copy.deepcopy(server.trunk).train(), copy.deepcopy(server.projector).train()
    ref_target = copy.deepcopy(server.target).train()
    queue = server.queue(0).keys.clone()
    outs = [s(v) for s, v in zip(ref_stems, views, strict=True)]
    for out in outs:
        out.retain_grad()
    x = torch.cat([o[:n] for o, n in zip(outs, sizes, strict=True)] + [o[n:] for o, n in zip(outs, sizes, strict=True)])
    moms = [d.activations(v)[1] for d, v in zip(devices, views, strict=True)]
    m = torch.cat([o[:n] for o, n in zip(moms, sizes, strict=True)] + [o[n:] for o, n in zip(moms, sizes, strict=True)])
    q_a, q_b = ref_proj(ref_trunk.ssl_features(x)).chunk(2)
    with torch.no_grad():
        k_a, k_b = ref_target(m).chunk(2)
    criterion = MoCoLoss(SSL.temperature)
    ref_loss = 0.5 * (criterion(q_a, k_b, queue) + criterion(q_b, k_a, queue))
    ref_loss.backward()

    # Split: each device's activations to the server, each slice back to its device.
    batches = [DeviceActivations(i, *d.activations(v)) for i, (d, v) in enumerate(zip(devices, views, strict=True))]
    result = server.step(batches, lr=0.1)
    assert result.loss == pytest.approx(ref_loss.item(), rel=1e-5) and result.images == sum(sizes)
    for i, (device, v, ref_stem, out) in enumerate(zip(devices, views, ref_stems, outs, strict=True)):
        assert result.gradients[i].shape == out.shape
        torch.testing.assert_close(result.gradients[i], out.grad, rtol=1e-4, atol=1e-7)
        device.backward_step(v, result.gradients[i], device.optimizer(TrainConfig(optimizer="sgd")), lr=0.1)
        for p, ref in zip(device.online.parameters(), ref_stem.parameters(), strict=True):
            torch.testing.assert_close(p.grad, ref.grad, rtol=1e-4, atol=1e-6)  # float32 sums in another order


def test_server_momentum_trunk_follows_the_online_trunk_and_the_keys_enter_the_queue():
    devices, server, views = _devices(2), _server(), _views([3, 3])
    target_before = [p.clone() for p in server.target.parameters()]
    result = server.step([DeviceActivations(i, *d.activations(v)) for i, (d, v) in
                          enumerate(zip(devices, views, strict=True))], lr=0.1)
    online = list(server.trunk.parameters()) + list(server.projector.parameters())
    for t, before, o in zip(server.target.parameters(), target_before, online, strict=True):
        torch.testing.assert_close(t, 0.9 * before + 0.1 * o)
    queue = server.queue(0)
    assert queue.filled == 2 * result.images and queue.ptr == 12
    assert torch.allclose(queue.keys[:12].norm(dim=1), torch.ones(12))


def test_without_feature_sharing_each_device_has_its_own_queue():
    devices, server, views = _devices(2), _server(sharing=False), _views([2, 4])
    server.step([DeviceActivations(7, *devices[0].activations(views[0])),
                 DeviceActivations(9, *devices[1].activations(views[1]))], lr=0.1)
    assert set(server.queues) == {7, 9}
    assert (server.queues[7].filled, server.queues[9].filled) == (4, 8)
    assert server.queue_fill == pytest.approx((4 + 8) / 2 / 64)


def test_device_step_recomputes_its_forward_and_moves_batchnorm_statistics_once():
    device = _devices(1)[0]
    images = np.random.default_rng(3).integers(0, 255, size=(20, 1, 28, 28), dtype=np.uint8)
    views = step_views(images, 4, SMALL, TrainConfig(), seed=5)
    assert torch.equal(views, step_views(images, 4, SMALL, TrainConfig(), seed=5))
    stats = device.online.features[0][1].running_mean.clone()
    online, momentum = device.activations(views)
    assert torch.equal(device.online.features[0][1].running_mean, stats)  # forward message: unchanged
    before = [p.clone() for p in device.momentum_stem.parameters()]
    device.backward_step(views, torch.ones_like(online), device.optimizer(TrainConfig(optimizer="sgd")), lr=0.1)
    assert not torch.equal(device.online.features[0][1].running_mean, stats)
    for t, b, o in zip(device.momentum_stem.parameters(), before, device.online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)


def test_bad_activations_are_refused_with_the_device_named():
    good = torch.zeros(4, 32, 14, 14)
    check_activations(DeviceActivations(3, good, good), (32, 14, 14))
    with pytest.raises(ValueError, match="device 3"):
        check_activations(DeviceActivations(3, torch.zeros(4, 32, 7, 7), good), (32, 14, 14))
    with pytest.raises(ValueError, match="NaN"):
        check_activations(DeviceActivations(3, good, good.clone().fill_(float("nan"))), (32, 14, 14))


def test_the_rebuilt_encoder_is_the_averaged_stem_and_the_trunk():
    cfg = RunConfig.from_flat({"mode": "split", "ssl.method": "moco", "split.cut": 2})
    stems, server = build_split(cfg)
    whole = build_encoder(cfg.model).eval()
    whole.load_state_dict(strip_prefix(to_torch(encoder_arrays(stems, server))), strict=True)
    assert len(whole.state_dict()) == len(encoder_arrays(stems, server))


@pytest.mark.parametrize("flat,words", [
    ({"mode": "vertical"}, ["mode", "vertical", "full", "split"]),
    ({"mode": "split"}, ["ssl.method", "moco"]),
    ({"mode": "split", "ssl.method": "moco", "split.cut": 4}, ["split.cut", "4"]),
    ({"mode": "split", "ssl.method": "moco", "split.eval-every": 15}, ["split.eval-every", "split.sync-period"]),
])
def test_bad_split_settings_are_refused_before_training(flat, words):
    with pytest.raises(ValueError) as err:
        RunConfig.from_flat(flat)
    for word in words:
        assert word in str(err.value)


def test_a_restored_server_takes_the_same_next_step_as_the_one_it_was_saved_from():
    devices, views = _devices(2), _views([3, 3])
    server = _server(sharing=False)
    batches = [DeviceActivations(i, *d.activations(v)) for i, (d, v) in enumerate(zip(devices, views, strict=True))]
    server.step(batches, lr=0.1)
    restored = _server(sharing=False)
    buffer = io.BytesIO()
    torch.save(server.checkpoint(), buffer)  # through bytes, as checkpoint.pt
    restored.restore(torch.load(io.BytesIO(buffer.getvalue()), weights_only=False))
    assert set(restored.queues) == {0, 1} and restored.queues[0].filled == 6
    a, b = server.step(batches, lr=0.1), restored.step(batches, lr=0.1)
    assert a.loss == b.loss
    for i in (0, 1):
        assert torch.equal(a.gradients[i], b.gradients[i])
    for p, q in zip(server.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(p, q)


def test_split_mode_refuses_a_modality_it_cannot_cut():
    from fedssl.config import RunConfig

    with pytest.raises(ValueError, match="'data.modality' = 'audio' must be 'image'"):
        RunConfig.from_flat({"mode": "split", "ssl.method": "moco", "data.modality": "audio",
                             "model.readout": "pool", "model.embedding-dim": 128, "eval.tasks": "speech-words"})
