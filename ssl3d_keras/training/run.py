"""A run directory: resolving its config, building its task, loading it back.

Layout of a run directory:

```
config.json     the fully resolved PretrainConfig (written atomically at start)
checkpoints/    tf.train.CheckpointManager of Checkpoint(model, optimizer, step)
metrics.csv     step, loss, accuracy, lr, examples_per_sec, wall
tensorboard/    tf.summary scalars of the same
summary.json    steps, final loss/accuracy, chance accuracy, wall time, checkpoints
prepared/       shards prepared from a raw --data folder (only then)
```
"""

import copy
import math
from pathlib import Path

from ssl3d_keras.config import from_dict
from ssl3d_keras.errors import ConfigError, DataError
from ssl3d_keras.training.checkpoints import RunCheckpoints, read_json
from ssl3d_keras.training.config import PretrainConfig, validate

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"


def as_config(config):
    """A `PretrainConfig` from a config, a dict, or None (the defaults)."""
    if config is None:
        return PretrainConfig()
    if isinstance(config, PretrainConfig):
        return copy.deepcopy(config)
    return from_dict(PretrainConfig, config)


def _manifest(folder):
    from ssl3d_keras.data.shards import read_manifest

    return read_manifest(folder)


def resolve_config(config, out_dir, *, verbose=True):
    """The fully resolved config of a run in `out_dir`.

    Validates the values, prepares a raw `data.path` into `OUT/prepared` (or
    reuses it there) and records it in `data.prepared`, and turns `epochs`
    into `steps`.

    Returns:
        A new `PretrainConfig`.
    """
    config = validate(as_config(config))
    data = config.data
    if data.path is not None:
        source = Path(data.path)
        if not source.exists():
            raise DataError(source, "data path not found")
        if (source / "manifest.json").is_file():
            data.prepared = str(source.resolve())
        else:
            target = Path(out_dir).resolve() / "prepared"
            if (target / "manifest.json").is_file():
                if verbose:
                    print(f"Using the dataset already prepared in {target}", flush=True)
            else:
                from ssl3d_keras.data.prepare import prepare_dataset
                from ssl3d_keras.data.preprocess import PreprocessConfig

                if verbose:
                    print(f"{source} is a raw dataset: preparing it into {target} first", flush=True)
                preprocess = from_dict(PreprocessConfig, data.preprocess, "data.preprocess")
                prepare_dataset(source, target, preprocess=preprocess, layout=data.layout,
                                progress=verbose)
            data.prepared = str(target)
    else:
        data.prepared = None
    if config.epochs is not None:
        per_epoch = examples_per_epoch(config)
        config.steps = max(1, math.ceil(config.epochs * per_epoch / config.batch_size))
    return config


def _prepared_spatial_shapes(config):
    manifest = _manifest(config.data.prepared)
    shapes = []
    for case in manifest.get("cases", []):
        shape = [int(s) for s in case["final_shape"]][: int(manifest["dim"])]
        if config.data.dim == 2 and int(manifest["dim"]) == 3:
            shapes.extend([tuple(shape[:config.data.slice_axis] + shape[config.data.slice_axis + 1:])]
                          * shape[config.data.slice_axis])
        else:
            shapes.append(tuple(shape))
    return manifest, shapes


def examples_per_epoch(config):
    """Examples in one pass over the data: volumes (or 2D slices) x crops per volume."""
    if config.data.prepared is None:
        volumes = config.data.phantoms.n
        if config.data.dim == 2:  # 3D phantoms cut into slices
            volumes *= config.data.phantoms.size
    else:
        volumes = len(_prepared_spatial_shapes(config)[1])
    return volumes * config.data.crops_per_volume


def input_shape(config):
    """Shape of one volume given to the task: `(*spatial, C)`.

    Raises:
        ConfigError: prepared volumes differ in shape and `data.input_size` is None.
    """
    dim = config.data.dim
    if config.data.prepared is None:
        channels = config.data.phantoms.channels
        spatial = (config.data.input_size or config.data.phantoms.size,) * dim
        return (*spatial, channels)
    manifest, shapes = _prepared_spatial_shapes(config)
    channels = int(manifest["channels"])
    if config.data.input_size is not None:
        return (*(config.data.input_size,) * dim, channels)
    if not shapes or len(set(shapes)) != 1:
        raise ConfigError("data.input_size", "the prepared volumes differ in shape; set a crop "
                          f"size. Received: input_size=None, shapes {sorted(set(shapes))[:4]}")
    return (*shapes[0], channels)


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
    data = read_json(Path(run_dir) / CONFIG_FILE)
    return from_dict(PretrainConfig, data)


def load_run(run_dir, checkpoint=None):
    """Rebuild the task of a run and restore its weights.

    Args:
        run_dir: a run directory written by `pretrain`.
        checkpoint: None for the latest checkpoint, a step number, or a
            checkpoint path prefix (`.../checkpoints/ckpt-300`).

    Returns:
        `(task, config)`: the `ProxyTask` with restored weights (its encoder is
        `task.encoder`) and the run's `PretrainConfig`.

    Raises:
        DataError: no config.json, no such checkpoint, or it does not fit the model.

    Example:

    >>> task, config = load_run("runs/rot")
    >>> encoder = task.encoder
    """
    import tensorflow as tf

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    task = build_task(config)
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoints = RunCheckpoints(run_dir / CHECKPOINT_DIR, task, None, step)
    if isinstance(checkpoint, int):
        checkpoint = str(run_dir / CHECKPOINT_DIR / f"ckpt-{checkpoint}")
        if not Path(checkpoint + ".index").is_file():
            raise DataError(checkpoint, "no such checkpoint. Received a step that was not saved; "
                            f"available: {checkpoints.manager.checkpoints}")
    checkpoints.restore(checkpoint, expect_partial=True)
    return task, config

