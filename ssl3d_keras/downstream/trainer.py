"""The fine-tuning loop shared by segmentation and classification.

Schedules: `frozen` trains the head or decoder only, with the encoder's
BatchNorm in inference mode; `warmup` does that for `warmup_steps`, then trains
every layer with a fresh Adam (the paper's protocol); `full` trains every layer
from the start. Each phase has its own optimiser, both are checkpointed, and a
resumed run continues in the phase its step belongs to, with the batches an
uninterrupted run would have drawn.
"""

import math
import time
from pathlib import Path

import numpy as np

from ssl3d_keras.atomic import atomic_path, write_json_atomic
from ssl3d_keras.training.logging import StepCsv

__all__ = ["fit", "phase_at"]

TRAINING_COLUMNS = ("step", "loss", "lr", "phase", "examples_per_sec", "wall")


def make_train_step(model, optimizer, loss_fn):
    """A `tf.function` step over the model's trainable variables at the time of the call."""
    import tensorflow as tf

    variables = list(model.trainable_variables)

    @tf.function
    def step(inputs, targets):
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = loss_fn(targets, outputs)
            if model.losses:
                loss = loss + tf.add_n(model.losses)
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return loss

    return step


def _adam(rate, config):
    import keras

    kwargs = {"learning_rate": rate}
    if config.clipnorm is not None:
        kwargs["clipnorm"] = config.clipnorm
    if config.weight_decay is not None:
        kwargs["weight_decay"] = config.weight_decay
    return keras.optimizers.Adam(**kwargs)


def phase_at(config, step):
    """`"frozen"` or `"full"`: what trains at (0-based) step `step` of a `FinetuneConfig`."""
    if config.schedule == "frozen":
        return "frozen"
    if config.schedule == "warmup" and step < config.warmup_steps:
        return "frozen"
    return "full"


def fit(model, loss_fn, batches, config, out_dir, *, resuming, validation, verbose):
    """Train `model` by the config's schedule; keep the weights with the best validation score.

    Args:
        model: a model from `build_segmentation_model` or `build_classification_model`.
        loss_fn: `loss(targets, outputs)`.
        batches: `batches(start_batch) -> iterable of (inputs, targets)`, endless.
        config: the `FinetuneConfig` (steps, schedule, optimiser, logging).
        out_dir: the run directory: `checkpoints/`, `training.csv`,
            `validation.csv`, `tensorboard/`, `best.weights.h5`, `best.json`.
        resuming: continue from the latest checkpoint in `out_dir`.
        validation: `(case_ids, score_fn, name)`; `score_fn(case_ids)` returns
            a float, higher is better. No case ids: the last weights are kept.
        verbose: show a progress bar.

    Returns:
        dict `step` (of the best score, or None) and `score`; the model holds
        the best weights when it returns.

    Raises:
        FloatingPointError: the loss became NaN or Inf (the last checkpoint is kept).
    """
    import keras
    import tensorflow as tf

    from ssl3d_keras.downstream.models import set_encoder_trainable
    from ssl3d_keras.training.checkpoints import read_json
    from ssl3d_keras.training.logging import write_scalar

    out_dir = Path(out_dir)
    ids, score_fn, name = validation
    o = config.optimizer
    optimizers = {"frozen": _adam(o.learning_rate, o),
                  "full": _adam(o.unfrozen_learning_rate or o.learning_rate, o)}
    # Built up front so a checkpoint restores both, whichever phase it was saved in.
    for phase, optimizer in optimizers.items():
        set_encoder_trainable(model, phase == "full")
        optimizer.build(model.trainable_variables)

    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, weights=list(model.weights),
                                     head_optimizer=optimizers["frozen"],
                                     optimizer=optimizers["full"], step=step_var)
    manager = tf.train.CheckpointManager(checkpoint, str(out_dir / "checkpoints"), max_to_keep=2,
                                         checkpoint_name="ckpt")
    start, best = 0, {"step": None, "score": -math.inf}
    if resuming and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        start = int(step_var.numpy())
        if (out_dir / "best.json").is_file():
            best = read_json(out_dir / "best.json")

    keep = start if resuming else None
    training_log = StepCsv(out_dir / "training.csv", TRAINING_COLUMNS, keep_until=keep)
    validation_log = StepCsv(out_dir / "validation.csv", ("step", name), keep_until=keep)
    writer = tf.summary.create_file_writer(str(out_dir / "tensorboard"))
    progbar = keras.utils.Progbar(config.steps, stateful_metrics=["loss", "val"],
                                  unit_name="step") if verbose else None
    if progbar is not None:
        progbar.update(start)

    def validate(step):
        value = float(score_fn(ids))
        validation_log.write({"step": step, name: value})
        with writer.as_default(step=step):
            write_scalar(f"validation/{name}", value)
        if not math.isnan(value) and value > best["score"]:
            best.update(step=step, score=value)
            with atomic_path(out_dir / "best.weights.h5") as tmp:
                model.save_weights(str(tmp))
            write_json_atomic(out_dir / "best.json", best)
        return value

    phase, train_step, losses = None, None, []
    started = window_start = time.perf_counter()
    iterator = iter(batches(start))
    try:
        for step in range(start, config.steps):
            if phase_at(config, step) != phase:
                phase = phase_at(config, step)
                set_encoder_trainable(model, phase == "full")
                train_step = make_train_step(model, optimizers[phase], loss_fn)
            inputs, targets = next(iterator)
            loss = float(train_step(inputs, targets))
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss} at step {step + 1}; lower optimizer.learning_rate. The last "
                    f"checkpoint is kept: {manager.latest_checkpoint}")
            losses.append(loss)
            done, value = step + 1, None
            if done % config.log_every == 0 or done == config.steps:
                now = time.perf_counter()
                rate = float(keras.ops.convert_to_numpy(optimizers[phase].learning_rate))
                row = {"step": done, "loss": float(np.mean(losses)), "lr": rate, "phase": phase,
                       "wall": now - started,
                       "examples_per_sec": len(losses) * config.batch_size
                       / max(now - window_start, 1e-9)}
                training_log.write(row)
                with writer.as_default(step=done):
                    write_scalar("loss", row["loss"])
                    write_scalar("learning_rate", rate)
                losses, window_start = [], now
            every = config.evaluation.validate_every
            if ids and ((every and done % every == 0) or done == config.steps):
                value = validate(done)
            if done % config.checkpoint_every == 0 or done == config.steps:
                step_var.assign(done)
                manager.save(checkpoint_number=done)
            if progbar is not None:
                progbar.update(done, values=[("loss", loss)]
                               + ([("val", value)] if value is not None else []))
    finally:
        writer.close()
    if best["step"] is not None and (out_dir / "best.weights.h5").is_file():
        model.load_weights(str(out_dir / "best.weights.h5"))
    return best
