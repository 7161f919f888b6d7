"""Local training: the learning-rate schedule across rounds and the optimiser state a device keeps."""

import math

import numpy as np
import pytest
import torch

from fedssl.config import RunConfig, TrainConfig
from fedssl.data.fashion_mnist import load_fashion_mnist
from fedssl.ssl import build_ssl_model
from fedssl.train import RoundPosition, learning_rate, train_local


def test_constant_schedule_is_the_configured_rate():
    cfg = TrainConfig(lr=0.003, schedule="constant")
    assert learning_rate(cfg, RoundPosition(7, 10), 5, 50) == 0.003


def test_cosine_schedule_warms_up_then_decays_to_zero_over_all_rounds():
    cfg = TrainConfig(lr=0.002, schedule="cosine", warmup_rounds=1.0)
    steps = 10
    warmup = [learning_rate(cfg, RoundPosition(1, 5), s, steps) for s in range(steps)]
    assert warmup == pytest.approx([0.002 * (s + 1) / steps for s in range(steps)])
    assert learning_rate(cfg, RoundPosition(2, 5), 0, steps) == pytest.approx(0.002)  # peak after warmup
    middle = learning_rate(cfg, RoundPosition(4, 5), 0, steps)  # halfway through rounds 2-5
    assert middle == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(cfg, RoundPosition(5, 5), steps - 1, steps) < 0.002 * 0.01


def test_optimizer_state_carries_over_between_rounds():
    cfg = RunConfig.from_flat({"train.batch-size": 16, "train.max-steps": 3})
    images, _ = load_fashion_mnist("train")
    images = np.array(images[:64])
    torch.manual_seed(0)
    model = build_ssl_model(cfg.ssl, cfg.model)
    first = train_local(model, images, cfg.model, cfg.train, seed=1, position=RoundPosition(1, 2))
    second = train_local(model, images, cfg.model, cfg.train, seed=2, position=RoundPosition(2, 2),
                         optimizer_state=first.optimizer_state)
    steps = [float(s["step"]) for s in second.optimizer_state["state"].values()]
    assert first.steps == second.steps == 3 and set(steps) == {6.0}  # Adam's count continued
    fresh = train_local(model, images, cfg.model, cfg.train, seed=2, position=RoundPosition(2, 2))
    assert {float(s["step"]) for s in fresh.optimizer_state["state"].values()} == {3.0}


@pytest.mark.parametrize("augmentation", ["batched", "per-sample"])
def test_both_augmentation_pipelines_train_the_configured_steps(augmentation):
    cfg = RunConfig.from_flat({"train.batch-size": 16, "train.max-steps": 2, "train.augmentation": augmentation})
    images, _ = load_fashion_mnist("train")
    torch.manual_seed(0)
    model = build_ssl_model(cfg.ssl, cfg.model)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    result = train_local(model, np.array(images[:40]), cfg.model, cfg.train, seed=0)
    assert result.steps == 2 and result.num_examples == 32 and np.isfinite(result.loss)
    assert any(not torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                                  ("fp16", torch.float16)])
def test_the_forward_pass_runs_in_the_chosen_precision_and_weights_stay_float32(precision, dtype):
    # Prepare: record the dtype the first convolution computes in
    cfg = RunConfig.from_flat({"train.batch-size": 16, "train.max-steps": 2})
    images, _ = load_fashion_mnist("train")
    torch.manual_seed(0)
    model = build_ssl_model(cfg.ssl, cfg.model)
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    seen: list[torch.dtype] = []
    conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    before = {k: v.detach().clone() for k, v in model.backbone.named_parameters()}
    # Execute
    result = train_local(model, np.array(images[:40]), cfg.model, cfg.train, seed=0, precision=precision)
    # Assert: autocast computed in `dtype` (fp16 with a gradient scaler), the weights trained and stayed fp32
    assert set(seen) == {dtype} and result.steps == 2 and np.isfinite(result.loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(before[k], v) for k, v in model.backbone.named_parameters())  # a step was taken
