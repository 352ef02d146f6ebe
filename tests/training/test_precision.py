"""Mixed precision tracks float32, and `--precision auto` follows the measured rule.

What runs on this CPU (checked here): mixed_bfloat16 for every task in 3D and
2D; mixed_float16 for the 2D tasks only (TensorFlow has no float16 CPU kernel
for MaxPool3D/AvgPool3D, so every 3D encoder fails; the GPU runs both).

Tolerance of the tracking tests, and why: bfloat16 keeps 8 significant bits
(a relative rounding of 2**-9 per value), float16 11. From identical weights
on one fixed batch, each of the first steps' losses is within 4 % of the
float32 loss (the largest seen: 2 %, jigsaw 3D at the second step) and within
a quarter of what float32 training lowered the loss by over those steps (the
largest seen: 13 %, 2D RPL), so the low-precision run learns what the float32
run learns. Settings that amplify rounding without telling anything about
precision are left out: dropout (float32 and bfloat16 draw their masks from
uniforms of their own dtype, so the masks differ) and hidden head layers with
BatchNorm over a batch of 4 (units of nearly equal values, normalised by
their tiny spread, turn a 0.4 % rounding into a 2 % loss change at step 0).
"""

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.benchmark.train import build_training_step
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.training import strategy
from ssl3d_keras.training.strategy import resolve_precision

ENCODER = {"depth": 1, "base_filters": 4, "norm": "batch", "dropout": 0.0}
HEAD = {"head_units": [], "head_dropout": 0.0}
# task -> (input edge, task config), small enough for seconds per run
CASES = {
    "rotation": (16, HEAD),
    "jigsaw": (24, {**HEAD, "num_permutations": 4, "jitter": 1}),
    "rpl": (24, {**HEAD, "jitter": 1}),
    "cpc": (16, {"grid": 2, "code_size": 16, "context_units": 8}),
    "exemplar": (16, {"embedding_size": 16}),
}
STEPS = 5
RTOL = 0.04
SHARE_OF_PROGRESS = 0.25


def _losses(task, precision, dim):
    size, task_config = CASES[task]
    if dim == 2 and task == "cpc":
        task_config = {**task_config, "grid": 3}  # 2D CPC cells overlap: 3 per axis at least
    # build_training_step seeds Python's `random`, so every precision starts from the same weights
    _, step, batch = build_training_step(task=task, size=size, batch_size=4, precision=precision,
                                         encoder=ENCODER, task_config=task_config, dim=dim,
                                         total_steps=STEPS)
    return np.array([float(step(batch)["loss"]) for _ in range(STEPS + 2)])


def _check_tracks(reference, losses):
    assert np.isfinite(losses).all(), losses
    reference, losses = reference[:STEPS], losses[:STEPS]
    deviation = np.abs(losses - reference)
    np.testing.assert_array_less(deviation, RTOL * np.abs(reference))
    progress = reference[0] - reference[-1]
    assert progress > 0, reference
    assert deviation.max() < SHARE_OF_PROGRESS * progress, (reference, losses)


def _applied_steps(losses):
    """The losses of the steps loss scaling applied: a skipped step (non-finite scaled
    gradients) leaves the weights as they were, so the next loss on the same batch is
    the same again."""
    kept = [losses[0]]
    for loss in losses[1:]:
        if loss != kept[-1]:
            kept.append(loss)
    return np.array(kept)


def _track(task, precision, dim):
    reference = _losses(task, "float32", dim)
    losses = _losses(task, precision, dim)
    if precision == "mixed_float16":
        losses = _applied_steps(losses)
        assert len(losses) >= STEPS, losses
    _check_tracks(reference, losses)


def test_a_few_steps_track_float32():
    # the fast member of the matrix below: the precision "auto" picks on this CPU
    _track("rotation", "mixed_bfloat16", 3)


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(CASES))
@pytest.mark.parametrize("precision,dim", [("mixed_bfloat16", 3), ("mixed_bfloat16", 2),
                                           ("mixed_float16", 2)])
def test_every_task_tracks_float32(task, precision, dim):
    _track(task, precision, dim)


def test_float16_has_no_3d_pooling_kernel_on_cpu():
    # Why mixed_float16 is GPU-only for 3D (`ssl3d pretrain` refuses it without a GPU):
    # if TensorFlow adds the kernel, this fails and the rule can be relaxed.
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("the GPU has float16 3D pooling")
    x = tf.zeros((1, 4, 4, 4, 1), tf.float16)
    with pytest.raises((tf.errors.NotFoundError, tf.errors.InvalidArgumentError)):
        tf.nn.max_pool3d(x, 2, 2, "VALID")
    assert tf.nn.max_pool2d(x[:, 0], 2, 2, "VALID").dtype == tf.float16


@pytest.mark.slow
def test_bfloat16_cpc_with_a_two_voxel_bottleneck_stays_finite():
    # The reported failure: the quick run's encoder on CPC patches of 8^3 has a
    # 2^3 bottleneck, where oneDNN's bfloat16 kernel gradient returned NaN within
    # the first steps (3 runs of 3) before the bottleneck computed in float32.
    from ssl3d_keras.training.config import QUICK_ENCODER

    model, step, batch = build_training_step(task="cpc", size=32, batch_size=4,
                                             precision="mixed_bfloat16",
                                             encoder=dict(QUICK_ENCODER), total_steps=8)
    for _ in range(8):
        assert np.isfinite(float(step(batch)["loss"]))
    assert all(np.isfinite(w.numpy()).all() for w in model.trainable_weights)


# --- precision "auto" -------------------------------------------------------------------------

@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a CPU-only machine with the given /proc/cpuinfo flags."""

    def use(flags):
        monkeypatch.setattr(strategy, "gpu_count", lambda: 0)
        monkeypatch.setattr(strategy, "cpu_flags", lambda: frozenset(flags))

    return use


PAPER = {}  # the paper encoder: base 16
REDUCED = {"depth": 2, "base_filters": 8, "norm": "batch", "dropout": 0.0}


def test_auto_is_mixed_float16_on_gpu(monkeypatch):
    monkeypatch.setattr(strategy, "gpu_count", lambda: 1)
    monkeypatch.setattr(strategy, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert resolve_precision("auto", encoder=PAPER) == "mixed_float16"
    assert resolve_precision("auto") == "mixed_float16"


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_picks_bfloat16_for_wide_encoders_on_native_bf16(cpu, flag):
    cpu({"avx512f", flag})
    assert resolve_precision("auto", encoder=PAPER) == "mixed_bfloat16"
    assert resolve_precision("auto", encoder={"base_filters": 32}) == "mixed_bfloat16"
    # measured slower for the reduced encoder (base 8)
    assert resolve_precision("auto", encoder=REDUCED) == "float32"
    assert resolve_precision("auto", encoder={"base_filters": 15}) == "float32"


def test_auto_keeps_float32_without_native_bf16(cpu):
    cpu({"avx512f", "avx2"})  # bfloat16 would be emulated: slower than float32
    assert resolve_precision("auto", encoder=PAPER) == "float32"
    assert resolve_precision("auto", encoder=REDUCED) == "float32"


def test_auto_without_an_encoder_or_for_another_architecture_is_float32(cpu):
    cpu({"avx512_bf16"})
    assert resolve_precision("auto") == "float32"
    assert resolve_precision("auto", encoder={"architecture": "densenet121"}) == "float32"


def test_explicit_precisions_pass_through_and_unknown_ones_are_config_errors(cpu):
    cpu(set())
    for name in ("float32", "mixed_float16", "mixed_bfloat16"):
        assert resolve_precision(name, encoder=PAPER) == name
    with pytest.raises(ConfigError) as info:
        resolve_precision("bfloat16")
    assert info.value.key == "precision"


def test_cpu_flags_reads_this_machine():
    flags = strategy.cpu_flags()
    assert isinstance(flags, frozenset)
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        assert flags == frozenset()
        return
    assert ("avx512_bf16" in flags) == (" avx512_bf16" in text)
