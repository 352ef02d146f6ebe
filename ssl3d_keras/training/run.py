"""A run: resolving its config, building its task, loading it back.

The run directory's file names are in `ssl3d_keras.training.rundir`. When a
run starts, its config is resolved once (`resolve_config`): the data are
prepared if raw, and the facts of the data that the task needs (input shape,
channels, examples per epoch, preprocessing) are recorded in
`config.data.resolved`, so `load_run` and everything after it work from the
run directory alone, even after the data folder moved or was deleted.
"""

import copy
import inspect
import logging
import math
import numbers
import os
from pathlib import Path

from ssl3d_keras.config import KERAS_MODEL_KWARGS, check_choice, check_int, closest, from_dict
from ssl3d_keras.errors import ConfigError, DataError, Ssl3dError
from ssl3d_keras.training.checkpoints import RunCheckpoints, read_json
from ssl3d_keras.training.config import PretrainConfig, ResolvedData, validate
from ssl3d_keras.training.rundir import CHECKPOINT_DIR, CONFIG_FILE, SUMMARY_FILE, RunDir

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "SUMMARY_FILE", "as_config", "build_task",
           "check_config", "differing_keys", "encoder_min_input_size", "examples_per_epoch",
           "input_shape", "load_run", "read_run_config", "resolve_config"]

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
    check_config(config)  # before preparing anything; again below with the data's shape
    data = config.data
    if data.path is not None:
        source = Path(data.path)
        if not source.exists():
            raise DataError(source, "data path not found")
        if Manifest.exists(source):
            data.prepared = str(source.resolve())
        else:
            from ssl3d_keras.data.prepare import prepare_owned
            from ssl3d_keras.data.preprocess import PreprocessConfig

            target = RunDir(Path(out_dir).resolve()).prepared
            if not Manifest.exists(target):
                logger.info("%s is a raw dataset: preparing it into %s first", source, target)
            preprocess = from_dict(PreprocessConfig, data.preprocess, "data.preprocess")
            prepare_owned(source, target, preprocess=preprocess, layout=data.layout,
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
    return check_config(config)


def check_config(config):
    """The checks of a validated `PretrainConfig` that need no model and no data work.

    The task name, the keys and value types of `task_config` and `encoder`
    (against the task's and the network's arguments), the data layout and
    preprocessing keys, the warm-up against the run's length, and whether the
    encoder's pooling fits the input (from the encoder table's arithmetic,
    before its weights are allocated: a depth-9 U-Net is gigabytes). The
    input-shape checks run once `data.resolved` (or a crop size) is known.

    Returns:
        `config`.

    Raises:
        ConfigError: naming the first invalid key and the value received.
    """
    from ssl3d_keras import tasks
    from ssl3d_keras.data.layouts import LAYOUTS
    from ssl3d_keras.data.preprocess import PreprocessConfig
    from ssl3d_keras.models.factory import architecture_arguments

    task_class = tasks.get_class(config.task)
    _check_arguments("task_config", config.task_config, task_class,
                     skip=("self", "input_shape", "encoder", "kwargs"))
    encoder = dict(config.encoder)
    architecture = encoder.get("architecture", "unet")
    allowed = architecture_arguments(architecture)  # ConfigError for an unknown architecture
    encoder_class = _encoder_class(architecture)
    unknown = sorted(set(encoder) - {"architecture", *allowed})
    if unknown:
        raise ConfigError(f"encoder.{unknown[0]}", f"unknown key for architecture "
                          f"{architecture!r}{closest(unknown[0], allowed)}; its keys are "
                          f"{allowed}. Received: {unknown}")
    _check_arguments("encoder", {k: v for k, v in encoder.items() if k != "architecture"},
                     encoder_class, skip=("self", "kwargs"))
    check_choice("data.layout", config.data.layout, ("auto", *LAYOUTS))
    for key in ("validation_data", "probe_data"):
        folder = getattr(config.monitor, key)
        if folder is not None and not Path(folder).exists():
            raise ConfigError(f"monitor.{key}", f"folder not found. Received: {folder!r}")
    from_dict(PreprocessConfig, config.data.preprocess, "data.preprocess")
    if config.optimizer.schedule == "cosine" and config.optimizer.warmup_steps >= config.steps:
        raise ConfigError("optimizer.warmup_steps",
                          f"must be smaller than the run's steps ({config.steps}). "
                          f"Received: {config.optimizer.warmup_steps}")
    spatial = _known_spatial_size(config)
    if spatial is not None:
        minimum = encoder_min_input_size(config.encoder)
        if min(spatial) < minimum:
            raise ConfigError("encoder", f"needs inputs of at least {minimum} voxels per axis "
                              f"(it halves them that often), larger than the "
                              f"{'x'.join(map(str, spatial))} input; lower encoder.depth or "
                              f"raise data.input_size. Received: encoder={config.encoder!r}")
    return config


def _encoder_class(architecture):
    from ssl3d_keras.models.applications import DenseNetEncoder
    from ssl3d_keras.models.unet import UNetEncoder

    return {"unet": UNetEncoder, "densenet121": DenseNetEncoder}.get(architecture)


def encoder_min_input_size(encoder):
    """Smallest spatial size an `encoder` table accepts, from its arithmetic, without building it.

    U-Net: `2**(depth + final_pool)`; DenseNet-121: 32. Unknown
    architectures give 1 (their own build checks them).

    Raises:
        ConfigError: `encoder.depth` is not an int >= 1.
    """
    architecture = encoder.get("architecture", "unet")
    cls = _encoder_class(architecture)
    if architecture == "unet":
        defaults = inspect.signature(cls.__init__).parameters
        depth = encoder.get("depth", defaults["depth"].default)
        check_int("encoder.depth", depth, 1, 62)
        final_pool = bool(encoder.get("final_pool", defaults["final_pool"].default))
        return 2 ** (depth + final_pool)
    return int(getattr(cls, "min_input_size", 1))


def _known_spatial_size(config):
    if config.data.resolved is not None:
        return tuple(config.data.resolved.input_shape[:-1])
    if config.data.input_size is not None:
        return (config.data.input_size,) * config.data.dim
    if config.data.path is None:
        return (config.data.phantoms.size,) * config.data.dim
    return None


def _check_arguments(table, values, cls, skip):
    """Keys of `values` must be arguments of `cls`; values of the type of their default.

    An argument whose default is None or absent takes any value (the class checks it).
    """
    parameters = {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
                  if name not in skip and p.kind is not p.VAR_KEYWORD}
    known = [*parameters, *KERAS_MODEL_KWARGS]
    for key, value in values.items():
        dotted = f"{table}.{key}"
        if key not in known:
            raise ConfigError(dotted, f"unknown key for {cls.__name__}{closest(key, known)}; "
                              f"its keys are {sorted(parameters)}. Received: {key}={value!r}")
        default = parameters[key].default if key in parameters else None
        expected = _type_of_default(default)
        if expected is not None and not _has_type(value, default):
            raise ConfigError(dotted, f"expected {expected} (like the default {default!r}). "
                              f"Received: {key}={value!r}")


def _type_of_default(default):
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, numbers.Integral):
        return "an integer"
    if isinstance(default, numbers.Real):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, (tuple, list)):
        return "a list of integers"
    return None


def _has_type(value, default):
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, numbers.Integral):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if isinstance(default, numbers.Real):
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return isinstance(value, (tuple, list)) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)


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


# data.cache = "auto" caches the decoded volumes when they fit in this share of
# the machine's memory, and never above the cap: 1000 volumes of 128^3 would
# take 16 GB, far past what a cache should hold.
CACHE_BUDGET_FRACTION = 0.25
CACHE_BUDGET_MAX_BYTES = 4 * 2**30


def decoded_bytes(config):
    """Bytes the decoded volumes (float32 images, int32 labels) of a resolved config take."""
    data = config.data
    if data.prepared is None:
        voxels = data.phantoms.n * data.phantoms.size ** data.dim
        return voxels * 4 * (data.phantoms.channels + 1)
    from ssl3d_keras.data.manifest import Manifest

    manifest = Manifest.read(data.prepared)
    voxels = sum(math.prod(shape) for shape in manifest.spatial_shapes())
    return voxels * 4 * (manifest.channels + 1)


def resolve_cache(config, *, memory_bytes=None):
    """`data.cache` as a bool: "auto" caches when the decoded data fit the budget.

    Args:
        config: a resolved `PretrainConfig` (`data.prepared` filled in).
        memory_bytes: the machine's physical memory; None reads it.

    Returns:
        bool.

    Example:

    >>> config = PretrainConfig()  # 16 phantoms of 64^3: 32 MB decoded
    >>> resolve_cache(config, memory_bytes=8 * 2**30)
    True
    >>> resolve_cache(config, memory_bytes=2**20)
    False
    """
    cache = config.data.cache
    if cache != "auto":
        return bool(cache)
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    budget = min(CACHE_BUDGET_FRACTION * memory_bytes, CACHE_BUDGET_MAX_BYTES)
    size = decoded_bytes(config)
    cached = size <= budget
    logger.info("data.cache=auto: the decoded volumes take %.2f GB, %s the budget of %.2f GB: %s",
                size / 1e9, "within" if cached else "above", budget / 1e9,
                "cached in memory" if cached else "streamed from the shards every epoch")
    return cached


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

    try:
        task = tasks.get(config.task, input_shape=input_shape(config),
                         encoder=dict(config.encoder), **config.task_config)
        return task.build_from_example()
    except Ssl3dError:
        raise
    except (ValueError, TypeError) as e:
        # A value the task's or encoder's own checks let through untyped.
        named = [k for k in config.task_config if f"{k}=" in str(e)]
        key = f"task_config.{named[0]}" if named else "task_config"
        raise ConfigError(key, f"the {config.task} task cannot be built from it: "
                          f"{e}. Received: task_config={config.task_config!r}, "
                          f"encoder={config.encoder!r}") from None


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
