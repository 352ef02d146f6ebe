"""The pretraining loop: run directory, resume, interruption, NaN handling, load_run.

Runs use tiny settings: a depth-1 encoder with 2 filters on 16^3 crops, a head
with 8 hidden units, batch 2, and a handful of steps.
"""

import json
import random
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.config import from_dict, set_dotted, to_dict
from ssl3d_keras.errors import ConfigError, DataError
from ssl3d_keras.tasks import register_task
from ssl3d_keras.tasks.base import ProxyTask
from ssl3d_keras.training import (
    NonFiniteLossError,
    PretrainConfig,
    load_run,
    make_train_step,
    pretrain,
)
from ssl3d_keras.training.logging import TrainingLogger, read_metrics
from ssl3d_keras.training.run import build_task


def tiny(**changes):
    """A tiny rotation run; dropout on in the encoder and head so resume must restore seeds."""
    config = {
        "task": "rotation",
        "task_config": {"head_units": [8], "head_dropout": 0.5},
        "encoder": {"depth": 1, "base_filters": 2, "norm": "batch", "dropout": 0.3},
        "data": {"input_size": 16, "phantoms": {"n": 4, "size": 20}},
        "steps": 6,
        "batch_size": 2,
        "checkpoint_every": 3,
        "log_every": 1,
    }
    for key, value in changes.items():
        set_dotted(config, key, value)
    return config


def weights_of(run_dir):
    task, _ = load_run(run_dir)
    return [w.numpy() for w in task.weights]


@register_task("test_nan_at_step")
@keras.saving.register_keras_serializable(package="ssl3d_tests")
class NanAtStep(ProxyTask):
    """Test double: a two-class task whose loss turns NaN at training step `nan_at`."""

    def __init__(self, input_shape, encoder=None, *, nan_at=4, **kwargs):
        super().__init__(input_shape, encoder, **kwargs)
        self.nan_at = nan_at
        self.head = keras.layers.Dense(2)
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    @property
    def chance_accuracy(self):
        return 0.5

    def transform(self, volume, seed, training=True):
        return volume, tf.random.stateless_uniform([], seed, 0, 2, tf.int32)

    def call(self, inputs, training=None):
        features = self.encoder(inputs, training=training)
        return self.head(keras.ops.mean(features, axis=tuple(range(1, self.dim + 1))))

    def loss_and_accuracy(self, target, outputs):
        self.calls.assign_add(1.0)
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
            target, outputs, from_logits=True))
        poison = tf.where(self.calls >= self.nan_at, float("nan"), 0.0)
        accuracy = keras.ops.mean(keras.metrics.sparse_categorical_accuracy(target, outputs))
        return loss + poison, accuracy

    def get_config(self):
        return {**super().get_config(), "nan_at": self.nan_at}


def test_run_directory_contents(tmp_path):
    summary = pretrain(tiny(), tmp_path / "run", verbose=False)
    run = tmp_path / "run"
    stored = json.loads((run / "config.json").read_text())
    # fully resolved: every field present, equal to the config read back
    assert stored == to_dict(from_dict(PretrainConfig, stored))
    assert stored["steps"] == 6 and stored["data"]["prepared"] is None
    rows = read_metrics(run / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1 for r in rows)
    assert all(r["lr"] == pytest.approx(1e-4) and r["examples_per_sec"] > 0 for r in rows)
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 6
    assert summary["chance_accuracy"] == pytest.approx(0.1)
    assert summary["final_loss"] == pytest.approx(rows[-1]["loss"])
    assert summary["latest_checkpoint"].endswith("ckpt-6")
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == [
        "ckpt-3.index", "ckpt-6.index"]
    # TensorBoard scalars, one per log step
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    tags = {}
    for event in tf.compat.v1.train.summary_iterator(str(events[0])):
        for value in event.summary.value:
            tags.setdefault(value.tag, []).append(event.step)
    assert set(tags) == {"loss", "accuracy", "learning_rate", "examples_per_sec"}
    assert tags["loss"] == [1, 2, 3, 4, 5, 6]


def test_log_rows_average_the_steps_since_the_last(tmp_path):
    logger = TrainingLogger(tmp_path, total_steps=7, start_step=0, global_batch=4, log_every=3,
                            verbose=False)
    losses = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    for step, loss in enumerate(losses, start=1):
        logger.step(step, {"loss": loss, "accuracy": step % 2}, lr=0.5)
    logger.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == [3, 6, 7]  # every 3 steps, and the last step
    assert [r["loss"] for r in rows] == [7 / 3, 56 / 3, 64.0]
    assert [r["accuracy"] for r in rows] == [2 / 3, 1 / 3, 1.0]
    assert all(r["lr"] == 0.5 and r["examples_per_sec"] > 0 for r in rows)
    assert rows[0]["wall"] <= rows[1]["wall"] <= rows[2]["wall"]


def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch, caplog):
    straight = pretrain(tiny(steps=8, checkpoint_every=100), tmp_path / "straight", verbose=False)

    real_step = TrainingLogger.step

    def signal_at_step_3(self, step, metrics, lr, **kwargs):
        real_step(self, step, metrics, lr, **kwargs)
        if step == 3:
            signal.raise_signal(signal.SIGTERM)  # handled by the loop: stop at the boundary

    monkeypatch.setattr(TrainingLogger, "step", signal_at_step_3)
    with caplog.at_level("INFO", logger="ssl3d_keras"):
        first = pretrain(tiny(steps=8, checkpoint_every=100), tmp_path / "resumed", verbose=True)
    monkeypatch.setattr(TrainingLogger, "step", real_step)
    assert first["status"] == "interrupted" and first["steps"] == 3
    assert "Interrupted at step 3" in caplog.text
    assert f"pretrain(None, {str(tmp_path / 'resumed')!r}, resume=True)" in caplog.text
    assert first["latest_checkpoint"].endswith("ckpt-3")

    second = pretrain(None, tmp_path / "resumed", resume=True, verbose=False)
    assert second["status"] == "completed" and second["steps"] == 8
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored

    rows_a = read_metrics(tmp_path / "straight" / "metrics.csv")
    rows_b = read_metrics(tmp_path / "resumed" / "metrics.csv")
    assert [r["step"] for r in rows_b] == list(range(1, 9))
    np.testing.assert_allclose([r["loss"] for r in rows_b], [r["loss"] for r in rows_a],
                               rtol=1e-6, atol=1e-7)
    for a, b in zip(weights_of(tmp_path / "straight"), weights_of(tmp_path / "resumed"),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert second["final_loss"] == pytest.approx(straight["final_loss"], rel=1e-6)


def test_resume_with_a_different_config_names_the_keys(tmp_path):
    pretrain(tiny(steps=2), tmp_path / "run", verbose=False)
    with pytest.raises(ConfigError) as info:
        pretrain(tiny(steps=2, seed=5, **{"optimizer.learning_rate": 1e-3,
                                          "data.phantoms.n": 3}),
                 tmp_path / "run", resume=True, verbose=False)
    # the learning rate may change on resume; the other keys are named
    assert info.value.key == "data.phantoms.n"
    differing = str(info.value).split("differing keys: ")[1].split(". ")[0].split(", ")
    assert "seed" in differing and "optimizer.learning_rate" not in differing
    # the same config is accepted
    summary = pretrain(tiny(steps=2), tmp_path / "run", resume=True, verbose=False)
    assert summary["steps"] == 2


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(tmp_path):
    pretrain(tiny(steps=1), tmp_path / "run", verbose=False)
    with pytest.raises(ConfigError) as info:
        pretrain(tiny(steps=1), tmp_path / "run", verbose=False)
    assert "resume=True" in str(info.value)  # the library names arguments, not CLI flags
    with pytest.raises(DataError):
        pretrain(None, tmp_path / "empty", resume=True, verbose=False)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny(task="test_nan_at_step", task_config={"nan_at": 5}, steps=10,
                  checkpoint_every=2)
    with pytest.raises(NonFiniteLossError) as info:
        pretrain(config, tmp_path / "run", verbose=False)
    assert info.value.step == 5
    assert "step 5" in str(info.value) and "ckpt-4" in str(info.value)
    checkpoints = tf.train.get_checkpoint_state(str(tmp_path / "run" / "checkpoints"))
    assert checkpoints.model_checkpoint_path.endswith("ckpt-4")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["steps"] == 4
    task, _ = load_run(tmp_path / "run")
    assert all(np.isfinite(w.numpy()).all() for w in task.weights)


def test_load_run_restores_the_chosen_checkpoint(tmp_path):
    pretrain(tiny(steps=6, checkpoint_every=3), tmp_path / "run", verbose=False)
    reader = tf.train.load_checkpoint(str(tmp_path / "run" / "checkpoints" / "ckpt-3"))
    task, config = load_run(tmp_path / "run", checkpoint=3)
    assert config.steps == 6
    # every weight equals its value in the checkpoint (the flat `weights` list)
    for i, weight in enumerate(task.weights):
        stored = reader.get_tensor(f"weights/{i}/.ATTRIBUTES/VARIABLE_VALUE")
        np.testing.assert_array_equal(weight.numpy(), stored)
    latest, _ = load_run(tmp_path / "run")
    assert any(not np.array_equal(a.numpy(), b.numpy())
               for a, b in zip(task.weights, latest.weights, strict=True))
    with pytest.raises(DataError):
        load_run(tmp_path / "run", checkpoint=4)


def test_mixed_bfloat16_runs_and_restores_the_policy(tmp_path):
    summary = pretrain(tiny(steps=2, precision="mixed_bfloat16"), tmp_path / "run",
                       verbose=False)
    assert summary["precision"] == "mixed_bfloat16"
    assert np.isfinite(summary["final_loss"])
    assert keras.config.dtype_policy().name == "float32"


def test_train_step_scales_the_loss_for_loss_scale_optimizer():
    # In float32 a power-of-two loss scale is exact, so a step with dynamic loss
    # scaling must equal a plain step: only if the step calls optimizer.scale_loss
    # (LossScaleOptimizer divides the gradients by its scale, 2**15; SGD, unlike
    # Adam, would show that as a 2**15 times smaller update).
    strategy = tf.distribute.get_strategy()
    config = from_dict(PretrainConfig, tiny(**{"task_config.head_dropout": 0.0,
                                               "encoder.dropout": 0.0}))
    batch = (tf.random.stateless_normal((2, 16, 16, 16, 1), [1, 2]), tf.constant([1, 7]))
    results = []
    for optimizer in (keras.optimizers.SGD(0.1),
                      keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))):
        random.seed(0)
        task = build_task(config)
        step = make_train_step(task, optimizer, strategy)
        step(batch)
        results.append([w.numpy() for w in task.trainable_weights])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_mixed_float16_without_gpu_is_a_config_error(tmp_path):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("the error is for machines without a GPU")
    with pytest.raises(ConfigError) as info:
        pretrain(tiny(precision="mixed_float16"), tmp_path / "run", verbose=False)
    assert info.value.key == "precision"


def test_raw_dataset_is_prepared_into_the_run_first(tmp_path, caplog):
    from ssl3d_keras.data.phantoms import write_phantom_dataset

    raw = write_phantom_dataset(tmp_path / "raw", 2, size=20)
    config = tiny(steps=2, **{"data.path": str(raw), "data.input_size": 16,
                              "data.preprocess": {"shape": [20, 20, 20]}})
    with caplog.at_level("INFO", logger="ssl3d_keras"):
        summary = pretrain(config, tmp_path / "run", verbose=True)
    prepared = tmp_path / "run" / "prepared"
    assert f"preparing it into {prepared}" in caplog.text
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert len(manifest["cases"]) == 2
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["data"]["prepared"] == str(prepared)
    assert stored["data"]["path"] == str(raw)
    assert summary["status"] == "completed"


def test_volumes_smaller_than_the_crop_are_warned_about(tmp_path):
    from ssl3d_keras.data.phantoms import make_phantom
    from ssl3d_keras.data.shards import MANIFEST_FORMAT, ShardWriter, write_manifest

    data = tmp_path / "prepared"
    with ShardWriter(data) as writer:
        shard = writer.write("small", make_phantom(1, size=(20, 20, 12))[0])
    write_manifest(data, {"format": MANIFEST_FORMAT, "dim": 3, "channels": 1,
                          "shards": writer.shards,
                          "cases": [{"id": "small", "final_shape": [20, 20, 12, 1],
                                     "shard": shard}]})
    with pytest.warns(UserWarning, match=r"1 of 1 prepared volumes are smaller than the "
                                         r"16x16x16 crop.*small"):
        pretrain(tiny(**{"data.path": str(data), "steps": 1}), tmp_path / "run", verbose=False)


def test_raw_dataset_left_half_prepared_by_a_kill_is_prepared_again(tmp_path, caplog):
    from ssl3d_keras.data.phantoms import write_phantom_dataset

    raw = write_phantom_dataset(tmp_path / "raw", 2, size=20)
    prepared = tmp_path / "run" / "prepared"
    prepared.mkdir(parents=True)
    (prepared / "shard-00000.tfrecord").write_bytes(b"half a shard")  # no manifest.json
    config = tiny(steps=1, **{"data.path": str(raw), "data.preprocess": {"shape": [20, 20, 20]}})
    with caplog.at_level("INFO", logger="ssl3d_keras"):
        summary = pretrain(config, tmp_path / "run", verbose=False)
    assert summary["status"] == "completed"
    assert "leftovers of an interrupted prepare" in caplog.text
    assert "overwrite" not in caplog.text  # no advice to use an option pretrain lacks
    assert len(json.loads((prepared / "manifest.json").read_text())["cases"]) == 2


# --- resuming with changes ---------------------------------------------------------------

def test_resume_with_more_steps_equals_the_longer_run(tmp_path):
    straight = pretrain(tiny(steps=10), tmp_path / "straight", verbose=False)
    pretrain(tiny(steps=6), tmp_path / "run", verbose=False)
    with pytest.warns(UserWarning, match="Resuming at step 6 with steps=10 instead of 6"):
        longer = pretrain(tiny(steps=10), tmp_path / "run", resume=True, verbose=False)
    assert longer["status"] == "completed" and longer["steps"] == 10
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 11))
    rows_straight = read_metrics(tmp_path / "straight" / "metrics.csv")
    np.testing.assert_allclose([r["loss"] for r in rows], [r["loss"] for r in rows_straight],
                               rtol=1e-6, atol=1e-7)
    for a, b in zip(weights_of(tmp_path / "straight"), weights_of(tmp_path / "run"),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert longer["final_loss"] == pytest.approx(straight["final_loss"], rel=1e-6)
    record = [{"step": 6, "key": "steps", "old": 6, "new": 10}]
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["steps"] == 10 and stored["resumed_changes"] == record
    assert longer["resumed_changes"] == record


def test_resume_with_a_new_learning_rate_applies_it_from_the_resumed_step(tmp_path):
    pretrain(tiny(steps=4, checkpoint_every=2), tmp_path / "run", verbose=False)
    with pytest.warns(UserWarning, match="learning_rate=0.002 instead of 0.0001; the new rate "
                                         "applies from step 4"):
        summary = pretrain(tiny(steps=6, checkpoint_every=2,
                                **{"optimizer.learning_rate": 2e-3}),
                           tmp_path / "run", resume=True, verbose=False)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["lr"] for r in rows] == pytest.approx([1e-4] * 4 + [2e-3] * 2)
    changes = json.loads((tmp_path / "run" / "config.json").read_text())["resumed_changes"]
    assert {"step": 4, "key": "optimizer.learning_rate", "old": 1e-4, "new": 2e-3} in changes
    assert summary["resumed_changes"] == changes and len(changes) == 2  # and steps 4 -> 6


def test_resume_cannot_stop_before_the_step_reached_nor_change_other_keys(tmp_path):
    pretrain(tiny(steps=6), tmp_path / "run", verbose=False)
    with pytest.raises(ConfigError) as info:
        pretrain(tiny(steps=4), tmp_path / "run", resume=True, verbose=False)
    assert info.value.key == "steps" and "(6)" in str(info.value)
    with pytest.raises(ConfigError) as info:
        pretrain(tiny(steps=8, batch_size=4), tmp_path / "run", resume=True, verbose=False)
    assert info.value.key == "batch_size"
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["steps"] == 6 and stored["resumed_changes"] == []  # nothing recorded


# --- non-finite steps --------------------------------------------------------------------

def poison_batches(monkeypatch, bad):
    """Make the pipeline's global batches `bad` (0-based) all NaN."""
    from ssl3d_keras.data import pipeline

    real = pipeline.make_pipeline

    def make_pipeline(*args, start_batch=0, **kwargs):
        dataset = real(*args, start_batch=start_batch, **kwargs)
        bad_ids = tf.constant(sorted(bad) or [-1], tf.int64)

        def poison(index, batch):
            inputs, target = batch
            hit = tf.reduce_any(tf.equal(index + start_batch, bad_ids))
            return tf.where(hit, inputs * float("nan"), inputs), target

        return dataset.enumerate().map(poison)

    monkeypatch.setattr(pipeline, "make_pipeline", make_pipeline)


def drop_batches(monkeypatch, dropped):
    """Make the pipeline skip its global batches `dropped` (the run that never saw them)."""
    from ssl3d_keras.data import pipeline

    real = pipeline.make_pipeline

    def make_pipeline(*args, **kwargs):
        ids = tf.constant(sorted(dropped), tf.int64)
        return real(*args, **kwargs).enumerate().filter(
            lambda i, b: tf.logical_not(tf.reduce_any(tf.equal(i, ids)))).map(lambda i, b: b)

    monkeypatch.setattr(pipeline, "make_pipeline", make_pipeline)


def test_skip_mode_undoes_nonfinite_steps_and_counts_them(tmp_path, monkeypatch):
    poison_batches(monkeypatch, {2, 4})
    summary = pretrain(tiny(steps=6, on_nonfinite="skip"), tmp_path / "skip", verbose=False)
    assert summary["status"] == "completed" and summary["skipped_steps"] == 2
    rows = read_metrics(tmp_path / "skip" / "metrics.csv")
    assert [r["skipped"] for r in rows] == [0, 0, 1, 0, 1, 0]
    assert np.isnan(rows[2]["loss"]) and np.isfinite(rows[3]["loss"])
    # A skipped step leaves no trace but the batch it used: the weights equal those of a
    # run that trained on the other four batches only (BatchNorm statistics, dropout
    # seeds and Adam's state included).
    monkeypatch.undo()
    drop_batches(monkeypatch, {2, 4})
    pretrain(tiny(steps=4), tmp_path / "reference", verbose=False)
    for a, b in zip(weights_of(tmp_path / "skip"), weights_of(tmp_path / "reference"),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_skip_mode_still_stops_after_too_many_in_a_row(tmp_path, monkeypatch):
    poison_batches(monkeypatch, set(range(2, 100)))
    config = tiny(steps=10, checkpoint_every=2, on_nonfinite="skip", max_nonfinite_skips=3)
    with pytest.raises(NonFiniteLossError) as info:
        pretrain(config, tmp_path / "run", verbose=False)
    # steps 3, 4, 5 skipped; the fourth in a row (step 6) stops the run
    assert info.value.step == 6 and info.value.in_a_row == 4
    assert "4 non-finite steps in a row" in str(info.value)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["skipped_steps"] == 3
    # checkpoints 2 and 4 hold the state after step 2 (steps 3-4 were undone): finite
    task, _ = load_run(tmp_path / "run")
    assert all(np.isfinite(w.numpy()).all() for w in task.weights)


@tf.custom_gradient
def _nan_gradient_if(x, poison):
    """The identity, whose gradient is NaN where the boolean `poison` is true."""
    return tf.identity(x), lambda dy: (dy * tf.where(poison, float("nan"), 1.0), None)


@register_task("test_nan_gradient_at_step")
@keras.saving.register_keras_serializable(package="ssl3d_tests")
class NanGradientAtStep(NanAtStep):
    """Test double: from call `nan_at` on, the loss stays finite but its gradient is NaN."""

    def loss_and_accuracy(self, target, outputs):
        self.calls.assign_add(1.0)
        loss = keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
            target, outputs, from_logits=True))
        poisoned = _nan_gradient_if(loss, self.calls >= self.nan_at)
        accuracy = keras.ops.mean(keras.metrics.sparse_categorical_accuracy(target, outputs))
        return poisoned, accuracy


def test_a_nan_update_with_a_finite_loss_is_never_checkpointed(tmp_path):
    config = tiny(task="test_nan_gradient_at_step", task_config={"nan_at": 4}, steps=10,
                  checkpoint_every=2)
    with pytest.raises(NonFiniteLossError) as info:
        pretrain(config, tmp_path / "run", verbose=False)
    # step 4's loss is finite but its update is NaN: the save at step 4 refuses it
    assert info.value.step == 4 and "weights are NaN/Inf" in str(info.value)
    latest = tf.train.get_checkpoint_state(str(tmp_path / "run" / "checkpoints"))
    assert latest.model_checkpoint_path.endswith("ckpt-2")
    task, _ = load_run(tmp_path / "run")
    assert all(np.isfinite(w.numpy()).all() for w in task.weights)


# --- output that cannot be written -------------------------------------------------------

def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    from ssl3d_keras.training.checkpoints import RunCheckpoints
    from ssl3d_keras.training.loop import RunOutputError

    pretrain(tiny(steps=2, checkpoint_every=2), tmp_path / "run", verbose=False)
    before = weights_of(tmp_path / "run")
    real_save = RunCheckpoints.save

    def disk_full(self, step):
        # the writer dies part-way: a torn data file, and no index update
        (tmp_path / "run" / "checkpoints" / f"ckpt-{step}_temp").mkdir()
        (tmp_path / "run" / "checkpoints" / f"ckpt-{step}_temp" / "part").write_bytes(b"\0" * 9)
        # TensorFlow's own wording (measured on a full tmpfs)
        raise tf.errors.ResourceExhaustedError(
            None, None, "{{function_node __wrapped__SaveV2_dtypes_2_device_/job:localhost/"
            f"replica:0/task:0/device:CPU:0}} {tmp_path}/run/checkpoints/ckpt-{step}_temp/part-"
            "00000-of-00001.data-00000-of-00001.tempstate1719; No space left on device "
            "[Op:SaveV2]")

    monkeypatch.setattr(RunCheckpoints, "save", disk_full)
    with pytest.raises(RunOutputError) as info:
        pretrain(tiny(steps=4, checkpoint_every=2), tmp_path / "run", resume=True,
                 verbose=False)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "run" / "checkpoints"))
    assert "cannot write (No space left on device); the run stopped" in message
    assert "\n" not in message
    assert f"previous checkpoint is intact: {tmp_path / 'run' / 'checkpoints' / 'ckpt-2'}" in (
        message)
    for a, b in zip(before, weights_of(tmp_path / "run"), strict=True):
        np.testing.assert_array_equal(a, b)
    # once the disk has room again, the run resumes from that checkpoint
    monkeypatch.setattr(RunCheckpoints, "save", real_save)
    assert pretrain(None, tmp_path / "run", resume=True, verbose=False)["steps"] == 4


def make_read_only(folder):
    """chmod the folder read-only (chattr +i as root, whom chmod does not stop); an undo."""
    import os
    import subprocess

    paths = [folder, *folder.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    if os.access(folder, os.W_OK) and os.geteuid() == 0:
        subprocess.run(["chattr", "+i", *map(str, paths)], check=False, capture_output=True)

    def undo():
        subprocess.run(["chattr", "-i", *map(str, paths)], check=False, capture_output=True)
        for p, mode in modes.items():
            p.chmod(mode)

    try:
        (folder / "probe").touch()
    except OSError:
        return undo
    (folder / "probe").unlink()
    undo()
    pytest.skip("cannot make a folder read-only here (root without chattr)")


def test_a_read_only_run_folder_on_resume_is_one_clear_error(tmp_path):
    from ssl3d_keras.training.loop import RunOutputError

    pretrain(tiny(steps=2, checkpoint_every=2), tmp_path / "run", verbose=False)
    before = weights_of(tmp_path / "run")
    undo = make_read_only(tmp_path / "run")
    try:
        with pytest.raises(RunOutputError) as info:
            pretrain(tiny(steps=4), tmp_path / "run", resume=True, verbose=False)
    finally:
        undo()
    message = str(info.value)
    assert str(tmp_path / "run") in message.split(":")[0] and "\n" not in message
    assert "previous checkpoint is intact" in message and "ckpt-2" in message
    for a, b in zip(before, weights_of(tmp_path / "run"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_torn_last_metrics_row_does_not_stop_a_resume(tmp_path, caplog):
    pretrain(tiny(steps=4, checkpoint_every=4), tmp_path / "run", verbose=False)
    metrics = tmp_path / "run" / "metrics.csv"
    with metrics.open("a") as f:
        f.write("5,2.30")  # the process died while writing step 5's row
    with caplog.at_level("WARNING", logger="ssl3d_keras"):
        summary = pretrain(tiny(steps=6, checkpoint_every=4), tmp_path / "run", resume=True,
                           verbose=False)
    assert "torn" in caplog.text and "'5,2.30'" in caplog.text
    assert summary["steps"] == 6
    assert [r["step"] for r in read_metrics(metrics)] == list(range(1, 7))


def test_skip_mode_catches_a_nan_update_whose_loss_is_finite(tmp_path):
    # The undo also restores the task's call counter, so the poisoned step repeats: the
    # bound on non-finite steps in a row ends the run with finite weights.
    config = tiny(task="test_nan_gradient_at_step", task_config={"nan_at": 4}, steps=10,
                  checkpoint_every=2, on_nonfinite="skip", max_nonfinite_skips=2)
    with pytest.raises(NonFiniteLossError) as info:
        pretrain(config, tmp_path / "run", verbose=False)
    assert (info.value.step, info.value.in_a_row) == (6, 3)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["skipped"] for r in rows] == [0, 0, 0, 1, 1]
    task, _ = load_run(tmp_path / "run")
    assert all(np.isfinite(w.numpy()).all() for w in task.weights)


def test_only_the_run_folders_own_write_errors_become_run_output_errors(tmp_path):
    from ssl3d_keras.training.loop import RunOutputError, _writing
    from ssl3d_keras.training.rundir import RunDir

    paths = RunDir(tmp_path / "run")
    with pytest.raises(RunOutputError, match=r"run/missing/f: cannot write \(No such file"):
        with _writing(paths.root, paths):
            open(tmp_path / "run" / "missing" / "f", "w")
    # a file elsewhere (e.g. a data file that cannot be read) keeps its own error
    with pytest.raises(FileNotFoundError), _writing(paths.root, paths):
        open(tmp_path / "elsewhere" / "f")
