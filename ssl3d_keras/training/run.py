"""A run: resolving its config, building its task, loading it back.

The run directory's file names are in `ssl3d_keras.training.rundir`. When a
run starts, its config is resolved once (`resolve_config`): the data are
prepared if raw, and the facts of the data that the task needs (input shape,
channels, examples per epoch, preprocessing) are recorded in
`config.data.resolved`, so `load_run` and everything after it work from the
run directory alone, even after the data folder moved or was deleted.
"""

import copy
import logging
import math
from pathlib import Path

from ssl3d_keras.config import from_dict
from ssl3d_keras.errors import ConfigError, DataError
from ssl3d_keras.training.checkpoints import RunCheckpoints, read_json
from ssl3d_keras.training.config import PretrainConfig, ResolvedData, validate
from ssl3d_keras.training.rundir import CHECKPOINT_DIR, CONFIG_FILE, SUMMARY_FILE, RunDir

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "SUMMARY_FILE", "as_config", "build_task",
           "differing_keys", "examples_per_epoch", "input_shape", "load_run", "read_run_config",
           "resolve_config"]

logger = logging.getLogger("ssl3d_keras")


def as_config(config):
    """A `PretrainConfig` from a config, a dict, or None (the defaults)."""
    if config is None:
        return PretrainConfig()
    if isinstance(config, PretrainConfig):
        return copy.deepcopy(config)
    return from_dict(PretrainConfig, config)


def resolve_config(config, out_dir, *, verbose=True):
    """The fully resolved config of a run in `out_dir`.

    Validates the values, prepares a raw `data.path` into `OUT/prepared` (or
    reuses it there) and records it in `data.prepared`, records the facts of
    the data in `data.resolved`, and turns `epochs` into `steps`. Progress is
    logged to the `ssl3d_keras` logger.

    Args:
        config: a `PretrainConfig`, a dict of its fields, or None.
        out_dir: the run directory.
        verbose: show the progress bar of a prepare.

    Returns:
        A new `PretrainConfig`.
    """
    from ssl3d_keras.data.manifest import Manifest

    config = validate(as_config(config))
    data = config.data
    if data.path is not None:
        source = Path(data.path)
        if not source.exists():
            raise DataError(source, "data path not found")
        if Manifest.exists(source):
            data.prepared = str(source.resolve())
        else:
            target = RunDir(Path(out_dir).resolve()).prepared
            if Manifest.exists(target):
                logger.info("Using the dataset already prepared in %s", target)
            else:
                from ssl3d_keras.data.prepare import prepare_dataset
                from ssl3d_keras.data.preprocess import PreprocessConfig

                logger.info("%s is a raw dataset: preparing it into %s first", source, target)
                preprocess = from_dict(PreprocessConfig, data.preprocess, "data.preprocess")
                prepare_dataset(source, target, preprocess=preprocess, layout=data.layout,
                                progress=verbose, holdout=data.holdout,
                                **({"unlabelled": True} if data.include_unlabelled else {}))
            data.prepared = str(target)
        from ssl3d_keras.data.holdout import check_selection

        check_selection(Manifest.read(data.prepared), holdout=data.holdout,
                        include_unlabelled=data.include_unlabelled, key="data")
    else:
        data.prepared = None
        if data.holdout is not None or data.include_unlabelled:
            logger.warning("data.holdout and data.include_unlabelled apply to a dataset "
                           "(data.path); the synthetic phantoms ignore them")
    data.resolved = _resolve_data(config)
    if config.epochs is not None:
        config.steps = max(1, math.ceil(config.epochs * data.resolved.examples_per_epoch
                                        / config.batch_size))
    return config


def _resolve_data(config):
    """The `ResolvedData` of a config whose `data.prepared` is set (or None: phantoms)."""
    from ssl3d_keras.data.manifest import Manifest

    data = config.data
    dim = data.dim
    if data.prepared is None:
        channels = data.phantoms.channels
        volumes = data.phantoms.n * (data.phantoms.size if dim == 2 else 1)
        spatial = (data.input_size or data.phantoms.size,) * dim
        return ResolvedData(input_shape=[*spatial, channels], channels=channels,
                            examples_per_epoch=volumes * data.crops_per_volume)
    manifest = Manifest.read(data.prepared)
    shapes = manifest.spatial_shapes(dim, data.slice_axis)
    channels = manifest.channels
    if data.input_size is not None:
        spatial = (data.input_size,) * dim
    elif shapes and len(set(shapes)) == 1:
        spatial = shapes[0]
    else:
        raise ConfigError("data.input_size", "the prepared volumes differ in shape; set a crop "
                          f"size. Received: input_size=None, shapes {sorted(set(shapes))[:4]}")
    return ResolvedData(input_shape=[*spatial, channels], channels=channels,
                        examples_per_epoch=len(shapes) * data.crops_per_volume,
                        channel_names=manifest.channel_names,
                        preprocessing=dict(manifest.preprocessing))


def _resolved(config):
    # Runs written before `data.resolved` existed read their data folder once more.
    return config.data.resolved or _resolve_data(config)


def examples_per_epoch(config):
    """Examples in one pass over the data: volumes (or 2D slices) x crops per volume."""
    return _resolved(config).examples_per_epoch


def input_shape(config):
    """Shape of one volume given to the task: `(*spatial, C)`.

    Read from `config.data.resolved` when the run recorded it (no data folder
    needed), else computed from the data.

    Raises:
        ConfigError: prepared volumes differ in shape and `data.input_size` is None.
    """
    return tuple(_resolved(config).input_shape)


def build_task(config):
    """The task of a config, with all its weights created.

    Build it inside the strategy scope and dtype policy of the run.
    """
    from ssl3d_keras import tasks

    task = tasks.get(config.task, input_shape=input_shape(config), encoder=dict(config.encoder),
                     **config.task_config)
    return task.build_from_example()


def differing_keys(a, b, prefix=""):
    """Dotted keys whose values differ between two nested dicts."""
    keys = []
    for key in sorted(set(a) | set(b)):
        dotted = f"{prefix}.{key}" if prefix else key
        va, vb = a.get(key, "<missing>"), b.get(key, "<missing>")
        if isinstance(va, dict) and isinstance(vb, dict) and key not in ("task_config", "encoder"):
            keys.extend(differing_keys(va, vb, dotted))
        elif va != vb:
            keys.append(dotted)
    return keys


def read_run_config(run_dir):
    """The `PretrainConfig` stored in a run directory.

    Raises:
        DataError: the folder has no readable config.json.
    """
    data = read_json(RunDir(run_dir).config)
    return from_dict(PretrainConfig, data)


def load_run(run_dir, checkpoint=None):
    """Rebuild the task of a run and restore its weights.

    Args:
        run_dir: a run directory written by `pretrain`.
        checkpoint: None for the latest checkpoint, a step number, `"best"`
            (the checkpoint with the best monitored score, see
            `ssl3d_keras.training.monitor`), or a checkpoint path prefix
            (`.../checkpoints/ckpt-300`).

    Returns:
        `(task, config)`: the `ProxyTask` with restored weights (its encoder is
        `task.encoder`) and the run's `PretrainConfig`.

    Raises:
        DataError: no config.json, no such checkpoint, or it does not fit the model.

    Example:

    >>> task, config = load_run("runs/rot")  # doctest: +SKIP
    >>> encoder = task.encoder               # doctest: +SKIP
    """
    import tensorflow as tf

    paths = RunDir(run_dir)
    config = read_run_config(run_dir)
    task = build_task(config)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoints = RunCheckpoints(paths.checkpoints, task, None, step)
    if checkpoint == "best":
        checkpoint = str(best_checkpoint(run_dir)[0])
    if isinstance(checkpoint, int):
        checkpoint = str(paths.checkpoint(checkpoint))
        if not Path(checkpoint + ".index").is_file():
            raise DataError(checkpoint, "no such checkpoint. Received a step that was not saved; "
                            f"available: {checkpoints.manager.checkpoints}")
    checkpoints.restore(checkpoint, expect_partial=True)
    return task, config



def best_checkpoint(run_dir):
    """`(path prefix, record)` of a run's best monitored checkpoint.

    Raises:
        DataError: the run kept no best checkpoint (it was not monitored).
    """
    from ssl3d_keras.training.monitor import BEST_FILE

    paths = RunDir(run_dir)
    record_file = paths.root / BEST_FILE
    record = read_json(record_file) if record_file.is_file() else {}
    prefix = record.get("checkpoint")
    if not prefix or not Path(str(prefix) + ".index").is_file():
        raise DataError(paths.root, "no best checkpoint: the run was not monitored. Pretrain "
                        "with monitor.every > 0 (held-out proxy score, optionally the "
                        "downstream probe) to keep one. Received a run without best.json")
    return prefix, record
