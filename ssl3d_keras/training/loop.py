"""The custom pretraining loop (not `model.fit`): strategy, checkpoints, resume.

One step: every replica runs `ProxyTask.optimization_step` (the project's one
train step, also behind `fit`) on its share of the global batch; loss and
accuracy are averaged across replicas.

A run holds its directory's lock (`ssl3d_keras.training.lock.RunLock`) while
it writes, checks its whole config and builds its model before it writes
anything, and turns a folder it cannot write (read-only, full) into one
`RunOutputError` that names the path: what it saved before stays intact.
"""

import contextlib
import copy
import hashlib
import logging
import math
import random
import re
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
from ssl3d_keras.training.lock import RunLock
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
    worker_role,
)

logger = logging.getLogger("ssl3d_keras")

# The keys a resumed run may change: a longer (or shorter, not below the step
# reached) run, a new learning rate (recovering from a NaN), and where the input
# pipeline runs.
RESUMABLE_KEYS = ("steps", "epochs", "optimizer.learning_rate",
                  # Where the input pipeline runs (a restarted dispatcher has a new address).
                  "data.service", "data.service_sharding")
# Keys the run itself fills in, never compared on resume.
_RUN_RECORDS = ("resumed_changes",)


class NonFiniteLossError(Ssl3dError, FloatingPointError):
    """The loss (or the weights) became NaN or Inf; the run stopped without saving that state.

    Args:
        step: the step whose loss was not finite.
        value: the loss value.
        checkpoint: the last good checkpoint kept, or None.
        in_a_row: with `on_nonfinite="skip"`, the non-finite steps in a row
            that stopped the run (0 otherwise).
    """

    def __init__(self, step, value, checkpoint, in_a_row=0):
        self.step = step
        self.value = value
        self.checkpoint = checkpoint
        self.in_a_row = in_a_row
        where = (f"the last good checkpoint is kept: {checkpoint}" if checkpoint
                 else "no checkpoint was saved before it")
        skipped = (f" after {in_a_row} non-finite steps in a row (max_nonfinite_skips)"
                   if in_a_row else "")
        super().__init__(f"loss is {value} at step {step}{skipped}; the run stopped without "
                         f"saving this state ({where}). Lower optimizer.learning_rate (it may "
                         "change on resume) or set optimizer.global_clipnorm")


class RunOutputError(Ssl3dError, OSError):
    """The run cannot write to its folder (read-only, full, removed); what it saved is intact.

    Args:
        path: the file or folder that could not be written.
        reason: the system's reason (e.g. "No space left on device").
        checkpoint: the latest checkpoint on disk (intact), or None.
    """

    def __init__(self, path, reason, checkpoint):
        self.path = str(path)
        self.reason = reason
        self.checkpoint = checkpoint
        kept = (f"its previous checkpoint is intact: {checkpoint}" if checkpoint
                else "no checkpoint had been saved yet")
        super().__init__(f"{path}: cannot write ({reason}); the run stopped and {kept}. Free "
                         "space or make the folder writable, then resume it (resume=True)")


@contextlib.contextmanager
def _writing(path, paths, *, tf_errors=False):
    """Turn a failed write under `path` into one `RunOutputError`.

    `tf_errors` also catches TensorFlow's I/O errors (checkpoints, TensorBoard);
    only around writes, where they cannot be an out-of-memory or a data error.
    """
    try:
        yield
    except RunOutputError:
        raise
    except OSError as e:
        if e.filename and not Path(e.filename).is_relative_to(paths.root):
            raise  # not the run's own folder (e.g. a data file that cannot be read)
        raise RunOutputError(e.filename or path, e.strerror or str(e),
                             _latest_on_disk(paths)) from None
    except tf.errors.OpError as e:
        if not tf_errors:
            raise
        raise RunOutputError(path, _system_reason(e), _latest_on_disk(paths)) from None


def _system_reason(error):
    """"No space left on device" from TensorFlow's "{{function_node ..}} FILE; REASON [Op:X]"."""
    text = re.sub(r"\{\{.*?\}\}\s*", "", error.message or "").strip()
    first = text.splitlines()[0] if text else type(error).__name__
    reason = first.rsplit("; ", 1)[-1]
    return re.sub(r"\s*\[Op:\w+\]$", "", reason)[:200] or type(error).__name__


def _latest_on_disk(paths):
    try:
        return tf.train.latest_checkpoint(str(paths.checkpoints))
    except (OSError, tf.errors.OpError):
        return None


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


def _distributed_dataset(config, task, strategy, start_step, run_id="run"):
    from functools import partial

    from ssl3d_keras.data import service
    from ssl3d_keras.data.pipeline import make_pipeline
    from ssl3d_keras.data.volumes import open_volumes

    data = config.data
    phantoms = {"n": data.phantoms.n, "size": data.phantoms.size,
                "channels": data.phantoms.channels, "seed": data.phantoms.seed}
    crop = None if data.input_size is None else (data.input_size,) * data.dim
    cache = run_lib.resolve_cache(config)

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(config.batch_size)
        replicas_here = context.num_replicas_in_sync // context.num_input_pipelines
        volumes = open_volumes(data.prepared, dim=data.dim, phantoms=phantoms,
                               slice_axis=data.slice_axis, input_context=context)
        # Replicas of one pipeline take its batches in turn, so global step k
        # uses pipeline batches k*replicas_here ... : resume skips exactly those.
        batches = make_pipeline(volumes, partial(task.transform, training=True),
                                batch_size=per_replica, seed=config.seed, crop_size=crop,
                                crops_per_volume=data.crops_per_volume,
                                shuffle_volumes=data.shuffle_volumes, cache=cache,
                                start_batch=start_step * replicas_here, input_context=context)
        if data.service is None:
            return batches
        # One job per run, input pipeline and start: a rerun never joins a stale stream.
        job = f"ssl3d-{run_id}-p{context.input_pipeline_id}-s{start_step}"
        return service.distribute(batches, data.service, job_name=job,
                                  sharding=data.service_sharding)

    return strategy.distribute_datasets_from_function(dataset_fn)



class _NonFiniteGuard:
    """Undoes a step whose loss or update is not finite (`on_nonfinite="skip"`).

    Keeps a copy, taken after the last finite step, of every variable a step
    changes: weights, BatchNorm statistics, dropout seed states, optimiser
    slots and iteration count. A skipped step then leaves no trace but the
    batch it consumed.

    Args:
        task: the `ProxyTask`.
        optimizer: its built optimiser.
        strategy: the `tf.distribute.Strategy` they were created under.
    """

    def __init__(self, task, optimizer, strategy):
        seen = set()
        self.variables = []
        for variable in (*task.variables, *optimizer.variables):
            if id(variable) not in seen:
                seen.add(id(variable))
                self.variables.append(variable)
        with strategy.scope():
            self.copies = [tf.Variable(tf.identity(_tensor(v)), trainable=False)
                           for v in self.variables]
        weights = [v for v in task.trainable_variables]

        def keep():
            for copy_, variable in zip(self.copies, self.variables, strict=True):
                copy_.assign(_tensor(variable))

        def undo():
            for copy_, variable in zip(self.copies, self.variables, strict=True):
                variable.assign(copy_.read_value())

        def weights_finite():
            return tf.reduce_all([tf.reduce_all(tf.math.is_finite(_tensor(w)))
                                  for w in weights])

        self.keep = tf.function(keep)
        self.undo = tf.function(undo)
        self._weights_finite = tf.function(weights_finite)

    def finite(self, loss):
        """True if the loss and the updated weights are all finite."""
        return math.isfinite(loss) and bool(self._weights_finite())


def _tensor(variable):
    # A Keras variable's backing tf.Variable (or distributed variable) value.
    return variable.value if isinstance(variable, keras.Variable) else variable


def _resume_config(config, out_dir, verbose):
    """The stored config of the run in `out_dir`, with the changes `config` may make to it.

    Returns:
        `(config, changes)`: the config to resume with and a list of
        `{"key", "old", "new"}` for each key that changed (all in
        `RESUMABLE_KEYS`).

    Raises:
        DataError: no run to resume.
        ConfigError: `config` changes a key outside `RESUMABLE_KEYS`.
    """
    paths = RunDir(out_dir)
    stored = run_lib.read_run_config(out_dir)
    if config is None:
        return stored, []
    given = run_lib.resolve_config(config, out_dir, verbose=False)
    old, new = to_dict(stored), to_dict(given)
    diff = [key for key in run_lib.differing_keys(old, new)
            if key.split(".")[0] not in _RUN_RECORDS]
    if stored.data.resolved is None:  # a run written before data.resolved existed
        diff = [key for key in diff if not key.startswith("data.resolved")]
    fixed = [key for key in diff if key not in RESUMABLE_KEYS]
    if fixed:
        raise ConfigError(fixed[0], "differs from the stored config of the run being resumed "
                          f"({paths.config}); differing keys: {', '.join(fixed)}. On resume "
                          f"only {', '.join(RESUMABLE_KEYS)} may change; resume without "
                          "changing the others, or start a new run in another folder")
    changes = [{"key": key, "old": _get(old, key), "new": _get(new, key)} for key in diff]
    resumed = copy.deepcopy(stored)
    resumed.steps, resumed.epochs = given.steps, given.epochs
    resumed.optimizer.learning_rate = given.optimizer.learning_rate
    return resumed, changes


def _get(data, dotted):
    for part in dotted.split("."):
        data = data[part]
    return data


def _record_resume_changes(config, changes, start, optimizer, paths):
    """Apply, warn about and record (config.json) the changes of a resumed run."""
    keys = {change["key"] for change in changes}
    if start > config.steps:
        raise ConfigError("steps", f"is below the step this run has reached ({start}); a "
                          f"resumed run can only stop at or after it. Received: "
                          f"steps={config.steps}")
    if keys & {"steps", "epochs"}:
        old = next((c["old"] for c in changes if c["key"] == "steps"), config.steps)
        note = ""
        if config.optimizer.schedule != "constant":
            note = (f"; the {config.optimizer.schedule} learning-rate schedule is stretched "
                    f"over the new length from step {start} on (its rate there changes)")
        warnings.warn(f"Resuming at step {start} with steps={config.steps} instead of {old}"
                      f"{note}.", UserWarning, stacklevel=3)
    if "optimizer.learning_rate" in keys:
        change = next(c for c in changes if c["key"] == "optimizer.learning_rate")
        if config.optimizer.schedule == "constant":
            # The checkpoint restored the old rate into the optimiser's variable.
            optimizer.learning_rate = config.optimizer.learning_rate
        warnings.warn(f"Resuming at step {start} with optimizer.learning_rate="
                      f"{change['new']} instead of {change['old']}; the new rate applies from "
                      f"step {start} on.", UserWarning, stacklevel=3)
    config.resumed_changes = [*config.resumed_changes,
                              *({"step": start, **change} for change in changes)]
    with _writing(paths.config, paths):
        write_json_atomic(paths.config, to_dict(config))


def pretrain(config, out_dir, *, resume=False, verbose=True, probe=None):
    """Pretrain the encoder of a proxy task; the outputs go to a run directory.

    Args:
        config: a `PretrainConfig`, a dict of its fields, or None. With
            `resume=True`, None uses the stored config.json; a config may
            change only `steps` / `epochs` (never below the step reached) and
            `optimizer.learning_rate` (each change is warned about and
            recorded in `resumed_changes` of config.json and the summary);
            any other difference is a `ConfigError` naming the keys.
        out_dir: the run directory (created). The run holds its lock
            (`run.lock`) while it writes: a second run into the same folder is
            refused with the holder's pid, host and start time.
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
        `checkpoint_dir`, `latest_checkpoint`, `skipped_steps` (non-finite
        steps undone with `on_nonfinite="skip"`), `resumed_changes`, and what
        ran (precision, strategy, replicas, jit_compile).

    Raises:
        ConfigError: invalid config (checked, and the model built, before
            anything is written), a differing config on resume, or another
            run holding `out_dir`.
        NonFiniteLossError: the loss became NaN/Inf (the last good checkpoint is kept).
        RunOutputError: `out_dir` cannot be written (read-only, full); what
            was saved before is intact.

    Example:

    >>> from ssl3d_keras.training import pretrain
    >>> summary = pretrain({"task": "rotation", "steps": 20}, "runs/rot")  # doctest: +SKIP
    """
    out_dir = _process_dir(Path(out_dir).resolve(), config)
    paths = RunDir(out_dir)
    if resume and not paths.is_run():
        raise DataError(out_dir, "nothing to resume: no config.json in this folder. "
                        "Received resume=True for a folder that holds no run")
    with contextlib.ExitStack() as stack:
        with _writing(out_dir, paths):
            out_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(RunLock(out_dir))
        return _pretrain_locked(config, paths, resume=resume, verbose=verbose, probe=probe)


def _process_dir(out_dir, config):
    """Where this process writes: the run folder, or a private one for a non-chief worker.

    In a multi-worker run every worker takes part in each checkpoint save
    (MultiWorkerMirroredStrategy's protocol), but only the chief writes the
    run folder; every other worker keeps its run, checkpoints included, in
    `OUT/workers/<task>-<index>`, which also lets it resume where no file
    system is shared.
    """
    if isinstance(config, dict):
        strategy = config.get("strategy", "auto")
    else:
        strategy = getattr(config, "strategy", "auto")
    if strategy not in ("auto", "multiworker"):
        return out_dir
    chief, name = worker_role()
    return out_dir if chief else out_dir / "workers" / name


def _check_workers_agree(strategy, start):
    """All workers must resume from the same step (each restored its own checkpoints)."""
    if strategy_name(strategy) != "multiworker":
        return
    gathered = strategy.run(lambda: tf.distribute.get_replica_context().all_gather(
        tf.constant([start], tf.int64), axis=0))
    steps = strategy.experimental_local_results(gathered)[0].numpy()
    low, high = int(steps.min()), int(steps.max())
    if low != high:
        raise DataError("checkpoints", f"the workers restored different steps ({low} to "
                        f"{high}): a worker was stopped between two workers' saves. Delete the "
                        f"newer checkpoints (checkpoints/ckpt-{high}*) so every worker resumes "
                        f"from step {low}")


def _pretrain_locked(config, paths, *, resume, verbose, probe):
    out_dir = paths.root
    changes = []
    if resume:
        config, changes = _resume_config(config, out_dir, verbose)
    else:
        if paths.has_checkpoints():
            raise ConfigError("out", f"{out_dir} already holds a run with checkpoints; resume "
                              "it (resume=True) to continue it, or choose another output "
                              f"folder. Received: out={str(out_dir)!r}")
        with _writing(out_dir, paths):
            config = run_lib.resolve_config(config, out_dir, verbose=verbose)
    precision = resolve_precision(config.precision, encoder=config.encoder)
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
    checkpoints = RunCheckpoints(paths.checkpoints, task, optimizer, step_var,
                                 max_to_keep=config.keep_checkpoints)
    start = 0
    previous_wall = 0.0
    previous_skipped = 0
    if resume:
        if checkpoints.latest is not None:
            start = checkpoints.restore()
            _say(verbose, f"Resuming {out_dir} from step {start} ({checkpoints.latest})")
        else:
            _say(verbose, f"No checkpoint in {out_dir} yet; starting from step 0")
        _check_workers_agree(strategy, start)
        if changes:
            _record_resume_changes(config, changes, start, optimizer, paths)
        with _writing(paths.metrics, paths):
            rows = truncate_metrics(paths.metrics, start)
        previous_skipped = int(sum(row["skipped"] for row in rows))
        if paths.summary.is_file():
            previous_wall = float(read_json(paths.summary).get("wall_time_sec", 0))
    else:
        # Written only now: an invalid config or a model that cannot be built leaves no run.
        with _writing(out_dir, paths):
            for stale in (paths.metrics, paths.summary):
                stale.unlink(missing_ok=True)
            write_json_atomic(paths.config, to_dict(config))

    _warn_about_padding(config)
    with _writing(out_dir, paths):
        monitor = PretrainMonitor.create(config, task, checkpoints, out_dir, start_step=start,
                                         probe=probe)
    dataset = _distributed_dataset(config, task, strategy, start,
                                   run_id=hashlib.sha1(str(out_dir).encode()).hexdigest()[:12])
    train_step = make_train_step(task, optimizer, strategy, jit_compile=jit_compile)
    guard = _NonFiniteGuard(task, optimizer, strategy) if config.on_nonfinite == "skip" else None
    _say(verbose, f"Pretraining '{config.task}' for {config.steps} steps (batch "
         f"{config.batch_size}, input {run_lib.input_shape(config)}, {precision}, "
         f"{strategy_name(strategy)} x{replicas}, jit_compile={jit_compile}) -> {out_dir}")
    with _writing(out_dir, paths, tf_errors=True):
        logger = TrainingLogger(out_dir, total_steps=config.steps, start_step=start,
                                global_batch=config.batch_size, log_every=config.log_every,
                                verbose=verbose)

    began = time.perf_counter()
    done = start
    status = "completed"
    saved_step = start if checkpoints.latest is not None else None
    run_info = (precision, strategy, jit_compile, previous_skipped)
    try:
        with _StopRequest() as stop:
            iterator = iter(dataset)
            in_a_row = 0
            for step in range(start + 1, config.steps + 1):
                lr = current_learning_rate(optimizer)
                metrics = train_step(next(iterator))
                values = {k: float(v) for k, v in metrics.items()}
                skipped = False
                if guard is not None:
                    if guard.finite(values["loss"]):
                        guard.keep()
                        in_a_row = 0
                    else:
                        guard.undo()
                        skipped, in_a_row = True, in_a_row + 1
                        if in_a_row > config.max_nonfinite_skips:
                            raise NonFiniteLossError(step, values["loss"], checkpoints.latest,
                                                     in_a_row)
                elif not math.isfinite(values["loss"]):
                    raise NonFiniteLossError(step, values["loss"], checkpoints.latest)
                with _writing(paths.metrics, paths, tf_errors=True):
                    logger.step(step, values, lr, skipped=skipped)
                done = step
                if monitor is not None and monitor.due(step):
                    with _writing(out_dir, paths):
                        monitor.check(step)
                if stop.signal is not None and step < config.steps:
                    status = "interrupted"
                    break
                if step % config.checkpoint_every == 0 and step < config.steps:
                    _save(checkpoints, task, step, paths)
                    saved_step = step
            with _writing(paths.metrics, paths, tf_errors=True):
                logger.flush(done, current_learning_rate(optimizer))
            if saved_step != done:
                _save(checkpoints, task, done, paths)
    except NonFiniteLossError as e:
        summary = _summary(config, task, logger, checkpoints, out_dir, done, "failed",
                           previous_wall + time.perf_counter() - began, *run_info)
        summary["error"] = str(e)
        with _writing(paths.summary, paths):
            write_json_atomic(paths.summary, summary)
        raise
    finally:
        with contextlib.suppress(OSError, tf.errors.OpError):
            logger.close()

    summary = _summary(config, task, logger, checkpoints, out_dir, done, status,
                       previous_wall + time.perf_counter() - began, *run_info)
    with _writing(paths.summary, paths):
        write_json_atomic(paths.summary, summary)
    if status == "interrupted":
        _say(verbose, f"Interrupted at step {done}: saved {checkpoints.latest}. Resume it with "
             f"pretrain(None, {str(out_dir)!r}, resume=True)")
    return summary


def _save(checkpoints, task, step, paths):
    # Weights can turn non-finite in the update of a step whose own loss was
    # finite; never store such a state as the latest checkpoint.
    if not _weights_finite(task):
        raise NonFiniteLossError(step, "finite but the updated weights are NaN/Inf",
                                 checkpoints.latest)
    # CheckpointManager writes under a temporary name and updates its index
    # last, so a failed save leaves the previous checkpoint the latest.
    with _writing(paths.checkpoints, paths, tf_errors=True):
        return checkpoints.save(step)


def _summary(config, task, logger, checkpoints, out_dir, done, status, wall, precision, strategy,
             jit_compile, previous_skipped=0):
    last = logger.last_finite or {}
    return {
        "task": config.task,
        "status": status,
        "steps": done,
        "target_steps": config.steps,
        "final_loss": last.get("loss"),
        "final_accuracy": last.get("accuracy"),
        "chance_accuracy": float(task.chance_accuracy),
        "wall_time_sec": wall,
        "examples_per_sec": (logger.last or {}).get("examples_per_sec"),
        "skipped_steps": previous_skipped + logger.skipped_total,
        "resumed_changes": list(config.resumed_changes),
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
