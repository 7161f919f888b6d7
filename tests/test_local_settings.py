"""The settings a device picks within the run's limits: batch size by measured memory, precision, steps, threads."""

import numpy as np
import pytest
import torch

from fedssl.config import RunConfig
from fedssl.device_profile import MIB, DeviceProfile
from fedssl.local_settings import (
    Footprint,
    choose_local_settings,
    choose_precision,
    measure_footprint,
    step_cap,
)
from fedssl.ssl import build_ssl_model
from fedssl.train import sample_views

JETSON = DeviceProfile(cpus=6, memory_mb=4096, accelerator="cuda", bf16=True, fp16=True)  # Orin: shared 4 GB
OLD_GPU = DeviceProfile(cpus=8, memory_mb=16_000, accelerator="cuda", bf16=False, fp16=True)  # e.g. a T4
BIG_GPU = DeviceProfile(cpus=16, memory_mb=141_000, accelerator="cuda", bf16=True, fp16=True)  # H200
THIS_CPU = DeviceProfile(cpus=2, memory_mb=24_000)


def _model_and_samples(cfg):
    images = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    return build_ssl_model(cfg.ssl, cfg.model), sample_views(images, cfg.model, cfg.train)


@pytest.fixture(scope="module")
def smallcnn():
    cfg = RunConfig.from_flat({})
    model, images = _model_and_samples(cfg)
    return {p: measure_footprint(model, images, "adam", p) for p in ("fp32", "bf16")}


def test_footprint_counts_weights_grads_and_adam_state_and_saved_activations():
    # Prepare
    cfg = RunConfig.from_flat({})
    model, images = _model_and_samples(cfg)
    weights = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    # Execute
    fp32 = measure_footprint(model, images, "adam", "fp32")
    sgd = measure_footprint(model, images, "sgd", "fp32")
    bf16 = measure_footprint(model, images, "adam", "bf16")
    # Assert: weights + grads + 2 Adam moments (SGD: 1) at least; activations grow with the batch
    assert fp32.fixed_bytes >= 4 * weights and fp32.fixed_bytes - sgd.fixed_bytes == pytest.approx(weights)
    assert fp32.bytes_per_sample > 2 * 2 * 32 * 28 * 28 * 4  # two views, at least the first conv's output each
    assert 0.3 < bf16.bytes_per_sample / fp32.bytes_per_sample < 0.75  # autocast saves mostly 2-byte tensors
    # the model's running statistics and the global RNG are untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng_before, torch.random.get_rng_state())


def test_precision_auto_follows_the_device():
    assert choose_precision(JETSON, "auto") == "bf16"
    assert choose_precision(OLD_GPU, "auto") == "fp16"
    assert choose_precision(THIS_CPU, "auto") == "fp32"
    assert choose_precision(BIG_GPU, "fp32") == "fp32"


@pytest.mark.parametrize(("profile", "precision"), [(THIS_CPU, "bf16"), (THIS_CPU, "fp16"), (OLD_GPU, "bf16")])
def test_unsupported_precision_is_refused_with_the_key(profile, precision):
    with pytest.raises(ValueError, match=f"'device.precision' = '{precision}'"):
        choose_precision(profile, precision)


def test_a_jetson_caps_the_batch_to_its_memory_a_big_gpu_and_this_cpu_do_not(smallcnn):
    # Prepare: a run asking for batches larger than 2 GB (half a Jetson's 4 GB) can hold
    cfg = RunConfig.from_flat({"train.batch-size": 8192})
    # Execute
    jetson = choose_local_settings(JETSON, cfg, lambda p: smallcnn[p])
    big = choose_local_settings(BIG_GPU, cfg, lambda p: smallcnn[p])
    cpu = choose_local_settings(THIS_CPU, cfg, lambda p: smallcnn[p])
    # Assert: the largest batch whose estimate fits in memory-fraction x memory
    budget = 0.5 * 4096 * MIB
    assert jetson.precision == "bf16" and 8 <= jetson.batch_size < 8192
    assert smallcnn["bf16"].bytes_at(jetson.batch_size) <= budget < smallcnn["bf16"].bytes_at(jetson.batch_size + 1)
    assert (big.batch_size, big.precision, big.threads) == (8192, "bf16", 16)
    assert (cpu.batch_size, cpu.precision, cpu.threads, cpu.accelerator) == (8192, "fp32", 2, "cpu")


def test_the_defaults_on_a_cpu_are_the_run_config(smallcnn):
    cfg = RunConfig.from_flat({})
    settings = choose_local_settings(THIS_CPU, cfg, smallcnn["fp32"])
    assert (settings.batch_size, settings.precision, settings.max_steps) == (128, "fp32", 50)
    assert settings.autocast_dtype is None


def test_a_minimum_batch_that_does_not_fit_names_the_key(smallcnn):
    cfg = RunConfig.from_flat({"device.min-batch-size": 64})
    tiny = DeviceProfile(cpus=1, memory_mb=(smallcnn["fp32"].bytes_at(40) / MIB) / 0.5)  # 40 samples fit, not 64
    assert choose_local_settings(tiny, RunConfig.from_flat({}), smallcnn["fp32"]).batch_size == 40
    with pytest.raises(ValueError, match="'device.min-batch-size' = 64"):
        choose_local_settings(tiny, cfg, smallcnn["fp32"])


def test_steps_stay_within_what_the_run_planned_and_threads_follow_the_config():
    # a smaller batch must not mean more steps than data.max-samples // train.batch-size (the server's bound)
    assert step_cap(RunConfig.from_flat({"train.max-steps": 0, "data.max-samples": 640, "train.batch-size": 64,
                                         "train.local-epochs": 2})) == 20
    assert step_cap(RunConfig.from_flat({"train.max-steps": 5})) == 5
    assert step_cap(RunConfig.from_flat({"train.max-steps": 0, "data.max-samples": 0})) == 0
    fixed = Footprint(fixed_bytes=0.0, bytes_per_sample=1.0)
    assert choose_local_settings(BIG_GPU, RunConfig.from_flat({"device.threads": 3}), fixed).threads == 3


@pytest.mark.parametrize(("key", "value"), [("device.precision", "fp8"), ("device.memory-fraction", 1.5),
                                            ("device.min-batch-size", 1), ("device.threads", -1)])
def test_bad_device_config_names_key_and_value(key, value):
    with pytest.raises(ValueError, match=f"'{key}' = {value!r}"):
        RunConfig.from_flat({key: value})


def test_the_footprint_of_another_modality_is_measured_on_its_training_views():
    # audio clips are cropped by its views: the raw 1 s clips would not even fit the encoder
    from fedssl.modality import MODALITIES
    from tests.test_audio_model import AUDIO_RUN

    cfg = RunConfig.from_flat(AUDIO_RUN)
    audio = MODALITIES.get("audio")
    model = build_ssl_model(cfg.ssl, cfg.model, backbone=audio.build_backbone(cfg))
    clips = np.random.default_rng(0).standard_normal((3, cfg.audio.sample_rate)).astype(np.float32)
    views = sample_views(clips, cfg.model, cfg.train, views=audio.views(cfg))  # 3 clips, repeated to 4
    footprint = measure_footprint(model, views, "adam")
    assert views[0].shape == (4, int(cfg.audio.crop_seconds * cfg.audio.sample_rate))
    assert footprint.bytes_per_sample > 0 and footprint.fixed_bytes > 4 * sum(p.numel() for p in model.parameters())
