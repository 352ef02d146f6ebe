"""The custom pretraining loop (not `model.fit`): strategy, checkpoints, resume.

One step: every replica runs `ProxyTask.optimization_step` (the project's one
train step, also behind `fit`) on its share of the global batch; loss and
accuracy are averaged across replicas.
"""

import logging
import math
import random
import signal
import threading
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ssl3d_keras.atomic import write_json_atomic
from ssl3d_keras.config import to_dict
from ssl3d_keras.errors import ConfigError, DataError, Ssl3dError
from ssl3d_keras.training import run as run_lib
from ssl3d_keras.training.checkpoints import RunCheckpoints, read_json
from ssl3d_keras.training.logging import TrainingLogger, truncate_metrics
from ssl3d_keras.training.monitor import PretrainMonitor
from ssl3d_keras.training.optim import current_learning_rate, dtype_policy, make_optimizer
from ssl3d_keras.training.rundir import RunDir
from ssl3d_keras.training.strategy import (
    gpu_count,
    make_strategy,
    resolve_jit_compile,
    resolve_precision,
    strategy_name,
)

logger = logging.getLogger("ssl3d_keras")


class NonFiniteLossError(Ssl3dError, FloatingPointError):
    """The loss (or the weights) became NaN or Inf; the run stopped without saving that state.

    Args:
        step: the step whose loss was not finite.
        value: the loss value.
        checkpoint: the last good checkpoint kept, or None.
    """

    def __init__(self, step, value, checkpoint):
        self.step = step
        self.value = value
        self.checkpoint = checkpoint
        where = (f"the last good checkpoint is kept: {checkpoint}" if checkpoint
                 else "no checkpoint was saved before it")
        super().__init__(f"loss is {value} at step {step}; the run stopped without saving this "
                         f"state ({where}). Lower optimizer.learning_rate or set "
                         "optimizer.global_clipnorm")


def make_train_step(task, optimizer, strategy, *, jit_compile=False):
    """A `tf.function` doing one optimisation step on a (distributed) batch.

    Args:
        task: a `ProxyTask` built in `strategy.scope()`.
        optimizer: a Keras optimiser created in `strategy.scope()`.
        strategy: the `tf.distribute.Strategy`.
        jit_compile: XLA-compile each replica's step.

    Returns:
        `step(batch) -> dict` of float32 scalars (`loss`, `accuracy`, ...), the
        means across replicas; `batch` is `(inputs, target)`, per-replica values
        from a distributed dataset, or plain tensors.
    """
    replicas = strategy.num_replicas_in_sync

    def replica_step(inputs, target):
        return task.optimization_step(inputs, target, optimizer, replicas)

    replica_step = tf.function(replica_step, jit_compile=jit_compile)

    @tf.function
    def train_step(batch):
        inputs, target = batch
        per_replica = strategy.run(replica_step, args=(inputs, target))
        return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in per_replica.items()}

    return train_step


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks at each step boundary."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def _handler(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False


def _seed_weights(seed):
    # Keras draws initializer and dropout seeds from Python's `random`; seeding
    # it (and numpy) makes the initial weights reproducible without setting
    # TensorFlow's global seed behind the caller's back (the data pipeline
    # derives all its randomness from `config.seed` statelessly).
    random.seed(seed)
    np.random.seed(seed)


def _weights_finite(task):
    return all(np.isfinite(v.numpy()).all() for v in task.trainable_variables)


def _say(verbose, message):
    # Library code logs; the CLI shows the `ssl3d_keras` logger's INFO lines.
    if verbose:
        logger.info(message)


def _prepare_run_dir(config, out_dir, resume, verbose):
    """Resolve the config and write (or check) config.json; returns the config."""
    paths = RunDir(out_dir)
    if resume:
        if not paths.is_run():
            raise DataError(out_dir, "nothing to resume: no config.json in this folder. "
                            "Received resume=True for a folder that holds no run")
        stored = run_lib.read_run_config(out_dir)
        if config is not None:
            given = run_lib.resolve_config(config, out_dir, verbose=False)
            diff = run_lib.differing_keys(to_dict(stored), to_dict(given))
            if stored.data.resolved is None:  # a run written before data.resolved existed
                diff = [key for key in diff if not key.startswith("data.resolved")]
            if diff:
                raise ConfigError(diff[0], "differs from the stored config of the run being "
                                  f"resumed ({paths.config}); differing keys: "
                                  f"{', '.join(diff)}. Resume without changing them, or start a "
                                  "new run in another folder")
        return stored
    if paths.has_checkpoints():
        raise ConfigError("out", f"{out_dir} already holds a run with checkpoints; resume it "
                          "(resume=True) to continue it, or choose another output folder. "
                          f"Received: out={str(out_dir)!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = run_lib.resolve_config(config, out_dir, verbose=verbose)
    for stale in (paths.metrics, paths.summary):
        stale.unlink(missing_ok=True)
    write_json_atomic(paths.config, to_dict(config))
    return config


def _warn_about_padding(config):
    """Warn when prepared volumes are smaller than the crop (they would be zero-padded)."""
    from ssl3d_keras.data.manifest import Manifest

    data = config.data
    if data.prepared is None or data.input_size is None:
        return
    manifest = Manifest.read(data.prepared)
    crop = (data.input_size,) * data.dim
    small = manifest.cases_smaller_than(crop, dim=data.dim, slice_axis=data.slice_axis)
    if small:
        shown = ", ".join(small[:5]) + (", ..." if len(small) > 5 else "")
        warnings.warn(
            f"{len(small)} of {len(manifest.cases)} prepared volumes are smaller than the "
            f"{'x'.join(map(str, crop))} crop and will be zero-padded, which can hand the "
            f"proxy task a shortcut (e.g. a rotation moves the padded band): {shown}. Prepare "
            "them to a fixed shape (PreprocessConfig.shape) or lower data.input_size.",
            UserWarning, stacklevel=2)


def _distributed_dataset(config, task, strategy, start_step):
    from functools import partial

    from ssl3d_keras.data.pipeline import make_pipeline
    from ssl3d_keras.data.volumes import open_volumes

    data = config.data
    phantoms = {"n": data.phantoms.n, "size": data.phantoms.size,
                "channels": data.phantoms.channels, "seed": data.phantoms.seed}
    crop = None if data.input_size is None else (data.input_size,) * data.dim

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(config.batch_size)
        replicas_here = context.num_replicas_in_sync // context.num_input_pipelines
        volumes = open_volumes(data.prepared, dim=data.dim, phantoms=phantoms,
                               slice_axis=data.slice_axis, input_context=context)
        # Replicas of one pipeline take its batches in turn, so global step k
        # uses pipeline batches k*replicas_here ... : resume skips exactly those.
        return make_pipeline(volumes, partial(task.transform, training=True),
                             batch_size=per_replica, seed=config.seed, crop_size=crop,
                             crops_per_volume=data.crops_per_volume,
                             shuffle_volumes=data.shuffle_volumes, cache=data.cache,
                             start_batch=start_step * replicas_here, input_context=context)

    return strategy.distribute_datasets_from_function(dataset_fn)


def pretrain(config, out_dir, *, resume=False, verbose=True, probe=None):
    """Pretrain the encoder of a proxy task; the outputs go to a run directory.

    Args:
        config: a `PretrainConfig`, a dict of its fields, or None. With
            `resume=True`, None uses the stored config.json; a config that
            differs from it is a `ConfigError` naming the differing keys.
        out_dir: the run directory (created).
        resume: continue from the latest checkpoint in `out_dir`, with the same
            data order, so the result equals that of an uninterrupted run.
        verbose: print progress and where the outputs are.
        probe: the downstream probe `config.monitor.probe` asks for,
            `probe(encoder, monitor_config, run_dir) -> float`
            (`ssl3d_keras.downstream.probe.probe_encoder`; the downstream room
            sits above this one, so it is handed in).

    Returns:
        The summary dict (also written to `summary.json`): `status`
        ("completed" or "interrupted" by SIGINT/SIGTERM), `steps`,
        `final_loss`, `final_accuracy`, `chance_accuracy`, `wall_time_sec`,
        `checkpoint_dir`, `latest_checkpoint`, and what ran (precision,
        strategy, replicas, jit_compile).

    Raises:
        ConfigError: invalid config, or a differing config on resume.
        NonFiniteLossError: the loss became NaN/Inf (the last good checkpoint is kept).

    Example:

    >>> from ssl3d_keras.training import pretrain
    >>> summary = pretrain({"task": "rotation", "steps": 20}, "runs/rot")  # doctest: +SKIP
    """
    out_dir = Path(out_dir).resolve()
    config = _prepare_run_dir(config, out_dir, resume, verbose)
    precision = resolve_precision(config.precision)
    jit_compile = resolve_jit_compile(config.jit_compile)
    strategy = make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    if precision == "mixed_float16" and not gpu_count():
        raise ConfigError("precision", "mixed_float16 needs a GPU (TensorFlow has no float16 "
                          "CPU kernels for 3D pooling); on CPU use mixed_bfloat16. "
                          "Received: precision='mixed_float16' on a machine without a GPU")
    if config.batch_size % replicas:
        raise ConfigError("batch_size", f"must be divisible by the {replicas} replicas of the "
                          f"strategy. Received: {config.batch_size}")

    _seed_weights(config.seed)
    with dtype_policy(precision), strategy.scope():
        task = run_lib.build_task(config)
        optimizer = make_optimizer(config.optimizer, config.steps, precision)
        optimizer.build(task.trainable_variables)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    paths = RunDir(out_dir)
    checkpoints = RunCheckpoints(paths.checkpoints, task, optimizer, step_var,
                                 max_to_keep=config.keep_checkpoints)
    start = 0
    previous_wall = 0.0
    if resume:
        if checkpoints.latest is not None:
            start = checkpoints.restore()
            _say(verbose, f"Resuming {out_dir} from step {start} ({checkpoints.latest})")
        else:
            _say(verbose, f"No checkpoint in {out_dir} yet; starting from step 0")
        truncate_metrics(paths.metrics, start)
        if paths.summary.is_file():
            previous_wall = float(read_json(paths.summary).get("wall_time_sec", 0))

    _warn_about_padding(config)
    monitor = PretrainMonitor.create(config, task, checkpoints, out_dir, start_step=start,
                                     probe=probe)
    dataset = _distributed_dataset(config, task, strategy, start)
    train_step = make_train_step(task, optimizer, strategy, jit_compile=jit_compile)
    _say(verbose, f"Pretraining '{config.task}' for {config.steps} steps (batch "
         f"{config.batch_size}, input {run_lib.input_shape(config)}, {precision}, "
         f"{strategy_name(strategy)} x{replicas}, jit_compile={jit_compile}) -> {out_dir}")
    logger = TrainingLogger(out_dir, total_steps=config.steps, start_step=start,
                            global_batch=config.batch_size, log_every=config.log_every,
                            verbose=verbose)

    began = time.perf_counter()
    done = start
    status = "completed"
    saved_step = start if checkpoints.latest is not None else None
    try:
        with _StopRequest() as stop:
            iterator = iter(dataset)
            for step in range(start + 1, config.steps + 1):
                lr = current_learning_rate(optimizer)
                metrics = train_step(next(iterator))
                values = {k: float(v) for k, v in metrics.items()}
                if not math.isfinite(values["loss"]):
                    raise NonFiniteLossError(step, values["loss"], checkpoints.latest)
                logger.step(step, values, lr)
                done = step
                if monitor is not None and monitor.due(step):
                    monitor.check(step)
                if stop.signal is not None and step < config.steps:
                    status = "interrupted"
                    break
                if step % config.checkpoint_every == 0 and step < config.steps:
                    _save(checkpoints, task, step)
                    saved_step = step
            logger.flush(done, current_learning_rate(optimizer))
            if saved_step != done:
                _save(checkpoints, task, done)
    except NonFiniteLossError as e:
        summary = _summary(config, task, logger, checkpoints, out_dir, done, "failed",
                           previous_wall + time.perf_counter() - began, precision, strategy,
                           jit_compile)
        summary["error"] = str(e)
        write_json_atomic(paths.summary, summary)
        raise
    finally:
        logger.close()

    summary = _summary(config, task, logger, checkpoints, out_dir, done, status,
                       previous_wall + time.perf_counter() - began, precision, strategy,
                       jit_compile)
    write_json_atomic(paths.summary, summary)
    if status == "interrupted":
        _say(verbose, f"Interrupted at step {done}: saved {checkpoints.latest}. Resume it with "
             f"pretrain(None, {str(out_dir)!r}, resume=True)")
    return summary


def _save(checkpoints, task, step):
    # Weights can turn non-finite in the update of a step whose own loss was
    # finite; never store such a state as the latest checkpoint.
    if not _weights_finite(task):
        raise NonFiniteLossError(step, "finite but the updated weights are NaN/Inf",
                                 checkpoints.latest)
    return checkpoints.save(step)


def _summary(config, task, logger, checkpoints, out_dir, done, status, wall, precision, strategy,
             jit_compile):
    last = logger.last or {}
    return {
        "task": config.task,
        "status": status,
        "steps": done,
        "target_steps": config.steps,
        "final_loss": last.get("loss"),
        "final_accuracy": last.get("accuracy"),
        "chance_accuracy": float(task.chance_accuracy),
        "wall_time_sec": wall,
        "examples_per_sec": last.get("examples_per_sec"),
        "run_dir": str(out_dir),
        "checkpoint_dir": str(RunDir(out_dir).checkpoints),
        "latest_checkpoint": checkpoints.latest,
        "metrics_csv": str(RunDir(out_dir).metrics),
        "tensorboard_dir": str(RunDir(out_dir).tensorboard),
        "precision": precision,
        "jit_compile": jit_compile,
        "strategy": strategy_name(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
