"""The ClientApp's round on real Fashion-MNIST shards and image folders (Flower records, no network)."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, RecordDict
from PIL import Image

from client_app.app import LOCAL_BACKBONE, train_round
from fedssl import reply
from fedssl.config import RunConfig
from fedssl.device_profile import usable_cpus
from fedssl.local_settings import measure_footprint
from fedssl.ssl import build_ssl_model
from fedssl.state import backbone_arrays, shared_arrays
from fedssl.train import sample_views
from server_app.reply_metrics import ReplyBounds, check_metrics, read_metrics

SMALL = {"data.max-samples": 64, "train.batch-size": 32}


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """A round sets torch's threads to what the device chose; later tests get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _global(cfg):
    arrays = backbone_arrays(build_ssl_model(cfg.ssl, cfg.model))
    return arrays, ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()})


def _context(run_config, node_config, state=None):
    return Context(run_id=1, node_id=7, node_config=node_config, state=state or RecordDict(),
                   run_config=RunConfig.from_flat(run_config).to_flat())


@pytest.mark.parametrize("method", ["simclr", "byol", "moco"])
def test_reply_holds_only_the_backbone_and_heads_stay_on_the_device(method):
    run_config = {**SMALL, "ssl.method": method, "ssl.queue-size": 128}
    cfg = RunConfig.from_flat(run_config)
    sent, record = _global(cfg)
    ctx = _context(run_config, {"partition-id": 1, "num-partitions": 10})
    content = train_round(record, 1, ctx)
    keys = set(content[reply.ARRAYS].keys())
    assert keys == set(sent)  # exactly the backbone, nothing more
    assert all(k.startswith("backbone.") for k in keys)
    metrics = dict(content[reply.METRICS])
    assert set(metrics) == set(reply.METRIC_KEYS)
    assert metrics[reply.NUM_EXAMPLES] == 64 and metrics[reply.SKIPPED] == 0
    assert 0 < metrics[reply.Z_STD] <= 1.5 and metrics[reply.RANKME] > 1
    local = set(ctx.state[reply.LOCAL_STATE].keys())
    assert local and not any(k.startswith("backbone.") for k in local)
    assert any(k.startswith("projector.") for k in local)
    assert LOCAL_BACKBONE in ctx.state


@pytest.mark.parametrize("method", ["simclr", "byol", "moco"])
def test_a_whole_model_reply_carries_the_trained_heads_from_the_global_but_no_target_or_queue(method):
    """transport-scope 'model': the heads start from the global's and come back trained; EMA targets
    and MoCo's queue never leave the device."""
    run_config = {**SMALL, "ssl.method": method, "ssl.queue-size": 128, "transport-scope": "model"}
    cfg = RunConfig.from_flat(run_config)
    model = build_ssl_model(cfg.ssl, cfg.model)
    sent = shared_arrays(model, "model")
    heads = sorted(k for k in sent if not k.startswith("backbone."))
    assert heads and all(k.startswith(("projector.", "predictor.")) for k in heads)
    assert not any(k.startswith("target.") or k.startswith("queue") for k in sent)
    sent[heads[0]] = np.full_like(sent[heads[0]], 0.25)  # a global head no fresh device could hold
    record = ArrayRecord(array_dict={k: Array(v) for k, v in sent.items()})
    content = train_round(record, 1, _context(run_config, {"partition-id": 1, "num-partitions": 10}))
    back = {k: v.numpy() for k, v in content[reply.ARRAYS].items()}
    assert set(back) == set(sent)
    moved = back[heads[0]] - 0.25
    assert 0 < np.abs(moved).max() < 0.25  # trained from the global's value, not from a fresh head


def test_a_global_whose_heads_do_not_match_the_device_model_is_refused():
    run_config = {**SMALL, "transport-scope": "model"}
    cfg = RunConfig.from_flat(run_config)
    sent, record = _global(cfg)  # the backbone only: no heads for a whole-model device
    with pytest.raises(ValueError, match="heads do not match"):
        train_round(record, 1, _context(run_config, {"partition-id": 1, "num-partitions": 10}))


def test_whole_model_transport_is_refused_where_only_a_backbone_is_exchanged():
    for extra in ({"mode": "split"}, {"client-update": "fedu", "ssl.method": "byol"}):
        with pytest.raises(ValueError, match="transport-scope"):
            RunConfig.from_flat({"transport-scope": "model", **extra})
    with pytest.raises(ValueError, match="transport-scope"):
        RunConfig.from_flat({"transport-scope": "heads"})


def test_local_heads_persist_between_rounds():
    cfg = RunConfig.from_flat(SMALL)
    _, record = _global(cfg)
    ctx = _context(SMALL, {"partition-id": 0, "num-partitions": 10})
    train_round(record, 1, ctx)
    after_first = ctx.state[reply.LOCAL_STATE]["projector.layers.0.weight"].numpy().copy()
    train_round(record, 2, ctx)
    fresh = build_ssl_model(cfg.ssl, cfg.model).state_dict()["projector.layers.0.weight"].numpy()
    second = ctx.state[reply.LOCAL_STATE]["projector.layers.0.weight"].numpy()
    assert not np.allclose(after_first, fresh)  # trained in round 1...
    assert not np.allclose(second, after_first)  # ...and trained on from there in round 2


def test_half_precision_transport_halves_the_bytes():
    cfg = RunConfig.from_flat(SMALL)
    _, record = _global(cfg)
    full = train_round(record, 1, _context(SMALL, {"partition-id": 0, "num-partitions": 10}))
    half_cfg = {**SMALL, "transport-dtype": "float16"}
    half = train_round(record, 1, _context(half_cfg, {"partition-id": 0, "num-partitions": 10}))
    ratio = half[reply.ARRAYS].count_bytes() / full[reply.ARRAYS].count_bytes()
    assert 0.45 < ratio < 0.55


def test_a_device_folder_with_fewer_images_than_a_batch_still_trains(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    cfg = RunConfig.from_flat(SMALL)
    _, record = _global(cfg)
    content = train_round(record, 1, _context(SMALL, {"data-dir": str(tmp_path)}))
    metrics = dict(content[reply.METRICS])
    assert metrics[reply.SKIPPED] == 0 and metrics[reply.NUM_EXAMPLES] == 5 and metrics[reply.STEPS] == 1


def test_a_device_with_a_single_image_is_skipped_with_a_reason(tmp_path):
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(tmp_path / "only.png")
    cfg = RunConfig.from_flat(SMALL)
    _, record = _global(cfg)
    metrics = dict(train_round(record, 1, _context(SMALL, {"data-dir": str(tmp_path)}))[reply.METRICS])
    assert metrics[reply.SKIPPED] == 1 and set(metrics) == set(reply.METRIC_KEYS)


@pytest.mark.parametrize("mode", ["collapse", "nan", "scale"])
def test_misbehaving_devices_send_really_bad_updates(mode):
    cfg = RunConfig.from_flat(SMALL)
    sent, record = _global(cfg)
    content = train_round(record, 1, _context(SMALL, {"partition-id": 0, "num-partitions": 10, "misbehave": mode}))
    arrays = {k: v.numpy() for k, v in content[reply.ARRAYS].items()}
    metrics = dict(content[reply.METRICS])
    if mode == "collapse":
        assert metrics[reply.Z_STD] < 0.01
    elif mode == "nan":
        assert any(np.isnan(a).any() for a in arrays.values() if a.dtype.kind == "f")
    else:
        key = "backbone.features.6.0.weight"  # the last conv block's weights
        assert np.abs(arrays[key]).mean() > 50 * np.abs(sent[key]).mean()


def test_bad_node_config_is_refused_with_the_key():
    cfg = RunConfig.from_flat(SMALL)
    _, record = _global(cfg)
    with pytest.raises(ValueError, match="partition-id"):
        train_round(record, 1, _context(SMALL, {"partition-id": 12, "num-partitions": 10}))
    with pytest.raises(ValueError, match="data-dir"):
        train_round(record, 1, _context(SMALL, {}))
    with pytest.raises(ValueError, match="misbehave"):
        train_round(record, 1, _context(SMALL, {"partition-id": 0, "num-partitions": 10, "misbehave": "evil"}))


def test_the_timer_hook_times_training_and_the_collapse_check():
    cfg = RunConfig.from_flat(SMALL)
    _, record = _global(cfg)
    entered: list[str] = []

    class Phase:
        def __init__(self, name: str) -> None:
            self.name = name

        def __enter__(self) -> None:
            entered.append(self.name)

        def __exit__(self, *exc: object) -> None:
            entered.append(f"/{self.name}")

    content = train_round(record, 1, _context(SMALL, {"partition-id": 0, "num-partitions": 10}), timer=Phase)
    assert entered == ["train_local", "/train_local", "collapse_check", "/collapse_check"]
    assert content[reply.METRICS][reply.STEPS] == 2


def test_the_reply_reports_the_settings_the_device_chose_and_the_server_accepts_them():
    # Prepare: one device as it is, one told it has 100 MiB (a simulated small board)
    cfg = RunConfig.from_flat(SMALL)
    _, record = _global(cfg)
    node = {"partition-id": 0, "num-partitions": 10}
    images = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    views = sample_views(images, cfg.model, cfg.train)
    footprint = measure_footprint(build_ssl_model(cfg.ssl, cfg.model), views, "adam", "fp32")
    fits = int((0.5 * 100 * 2**20 - footprint.fixed_bytes) // footprint.bytes_per_sample)
    assert 8 <= fits < 32  # the premise: 100 MiB holds fewer than the run's 32 samples
    # Execute
    plain = dict(train_round(record, 1, _context(SMALL, node))[reply.METRICS])
    small = dict(train_round(record, 1, _context(SMALL, {**node, "device-memory-mb": 100}))[reply.METRICS])
    # Assert
    assert set(plain) == set(small) == set(reply.METRIC_KEYS)
    assert plain[reply.DEVICE_BATCH_SIZE] == 32 and plain[reply.DEVICE_PRECISION_BITS] == 32
    assert plain[reply.DEVICE_THREADS] == usable_cpus() and plain[reply.DEVICE_MEMORY_MB] > 100
    assert small[reply.DEVICE_BATCH_SIZE] == fits and small[reply.DEVICE_MEMORY_MB] == 100
    assert small[reply.NUM_EXAMPLES] == fits * small[reply.STEPS]  # it trained on the batches it chose
    assert small[reply.STEPS] == plain[reply.STEPS] == 2  # and no more steps than the run planned
    bounds = ReplyBounds.from_config(cfg)
    for metrics in (plain, small):
        check_metrics(read_metrics(metrics), bounds)  # the server's screening accepts both


def test_a_device_too_small_for_the_minimum_batch_refuses_to_train():
    cfg = RunConfig.from_flat(SMALL)
    _, record = _global(cfg)
    with pytest.raises(ValueError, match="device.min-batch-size"):
        train_round(record, 1, _context(SMALL, {"partition-id": 0, "num-partitions": 10, "device-memory-mb": 40}))
    with pytest.raises(ValueError, match="device.precision"):  # bf16 asked of a CPU that was not said to have it
        train_round(record, 1, _context({**SMALL, "device.precision": "bf16"},
                                        {"partition-id": 0, "num-partitions": 10, "device-accelerator": "cpu"}))


def test_a_simulated_jetson_trains_in_bf16_and_says_so():
    cfg = RunConfig.from_flat(SMALL)
    _, record = _global(cfg)
    jetson = {"partition-id": 0, "num-partitions": 10, "device-accelerator": "cuda", "device-bf16": "true",
              "device-memory-mb": 4096, "device-cpus": 6}
    metrics = dict(train_round(record, 1, _context(SMALL, jetson))[reply.METRICS])
    assert metrics[reply.DEVICE_PRECISION_BITS] == 16 and metrics[reply.DEVICE_BATCH_SIZE] == 32
    assert metrics[reply.DEVICE_THREADS] == 6 and metrics[reply.DEVICE_MEMORY_MB] == 4096
    assert metrics[reply.SKIPPED] == 0 and np.isfinite(metrics[reply.LOSS])
    check_metrics(read_metrics(metrics), ReplyBounds.from_config(cfg))
