"""Optimiser, schedules and precision set-up against hand-computed values."""

import math

import keras
import numpy as np
import pytest

from ssl3d_keras.config import from_dict
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.training import OptimizerConfig
from ssl3d_keras.training.optim import dtype_policy, make_optimizer, make_schedule


def _lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_constant_is_the_paper_default():
    config = OptimizerConfig()
    assert config.name == "adam" and config.learning_rate == 1e-4
    assert make_schedule(config, 100) == 1e-4


def test_cosine_with_warmup_matches_the_formula():
    config = from_dict(OptimizerConfig, {"schedule": "cosine", "learning_rate": 1e-3,
                                         "warmup_steps": 10, "alpha": 0.1})
    schedule = make_schedule(config, 110)

    def reference(step):  # linear warm-up from 0, then cosine to alpha * peak over 100 steps
        if step < 10:
            return 1e-3 * step / 10
        t = min(step - 10, 100) / 100
        return 1e-3 * ((1 - 0.1) * 0.5 * (1 + math.cos(math.pi * t)) + 0.1)

    for step in (0, 5, 10, 35, 60, 109, 110):
        assert _lr(schedule, step) == pytest.approx(reference(step), rel=1e-5, abs=1e-9)


def test_cosine_without_warmup_starts_at_the_peak():
    schedule = make_schedule(OptimizerConfig(schedule="cosine", learning_rate=2e-4), 50)
    assert _lr(schedule, 0) == pytest.approx(2e-4)
    assert _lr(schedule, 50) == pytest.approx(0.0, abs=1e-12)


def test_warmup_longer_than_run_is_an_error():
    with pytest.raises(ConfigError) as info:
        make_schedule(OptimizerConfig(schedule="cosine", warmup_steps=20), 20)
    assert info.value.key == "optimizer.warmup_steps"


def test_adamw_clipping_and_loss_scaling():
    optimizer = make_optimizer(OptimizerConfig(name="adamw", global_clipnorm=1.0), 10)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == pytest.approx(0.004)
    assert optimizer.global_clipnorm == 1.0
    scaled = make_optimizer(OptimizerConfig(clipnorm=2.0), 10, precision="mixed_float16")
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    assert scaled.inner_optimizer.clipnorm == 2.0
    # dynamic loss scaling multiplies the loss before the gradient
    assert float(scaled.scale_loss(keras.ops.convert_to_tensor(1.0))) > 1.0


def test_global_clipnorm_clips_the_update():
    var = keras.Variable(np.zeros(4, np.float32))
    optimizer = make_optimizer(OptimizerConfig(global_clipnorm=0.5, learning_rate=1.0), 10)
    grad = keras.ops.convert_to_tensor(np.array([3.0, 4.0, 0.0, 0.0], np.float32))
    optimizer.apply_gradients([(grad, var)])
    # Adam's first step moves each coordinate by lr * g / (|g| + eps) regardless of scale,
    # so check the first moment instead: m = (1 - beta1) * clipped gradient.
    (m,) = [v.numpy() for v in optimizer.variables if "momentum" in v.name]
    np.testing.assert_allclose(np.linalg.norm(m / 0.1), 0.5, rtol=1e-5)


def test_dtype_policy_is_restored():
    before = keras.config.dtype_policy().name
    with dtype_policy("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        layer = keras.layers.Dense(2)
    assert layer.compute_dtype == "bfloat16"
    assert keras.config.dtype_policy().name == before
