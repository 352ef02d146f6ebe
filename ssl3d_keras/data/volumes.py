"""Volume sources: the `tf.data.Dataset` of volumes a run reads.

`open_volumes(None)` gives synthetic phantoms, `open_volumes(folder)` the
prepared shards of `ssl3d prepare` (as 3D volumes, or as 2D slices along
`slice_axis`), each split across input pipelines under a distribution
strategy. `ssl3d_keras.data.pipeline.make_pipeline` turns them into batches.

Example:

>>> from ssl3d_keras.data.volumes import open_volumes
>>> volumes = open_volumes(None, dim=2, slice_axis=0, phantoms={"n": 2, "size": 16})
>>> int(volumes.cardinality()), volumes.element_spec["image"].shape
(32, TensorShape([16, 16, 1]))
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from ssl3d_keras.data.manifest import MANIFEST_NAME, Manifest
from ssl3d_keras.data.phantoms import _as_shape, make_phantom
from ssl3d_keras.data.shards import parse_example
from ssl3d_keras.errors import ConfigError, DataError

__all__ = ["PHANTOM_DEFAULTS", "open_volumes", "phantom_volumes", "shard_volumes",
           "volume_slices"]

AUTOTUNE = tf.data.AUTOTUNE
PHANTOM_DEFAULTS = {"n": 16, "size": 64, "channels": 1, "seed": 0, "dim": 3}


def _shard_range(n, input_context):
    """Indices of `range(n)` this input pipeline reads under `input_context`."""
    if input_context is None or input_context.num_input_pipelines <= 1:
        return list(range(n))
    return list(range(input_context.input_pipeline_id, n, input_context.num_input_pipelines))


def phantom_volumes(n, *, size, channels=1, dim=3, seed=0, input_context=None):
    """Synthetic phantoms as a finite dataset, one element per volume.

    Volume `i` is `make_phantom((seed, i), ...)` with case id `phantom_00i`,
    the same case `write_phantom_dataset` writes.

    Args:
        n: int >= 1, number of volumes.
        size: int or tuple of `dim` ints.
        channels: int, number of contrasts. Default 1.
        dim: 3 or 2. Default 3.
        seed: int, data set seed. Default 0.
        input_context: optional `tf.distribute.InputContext`; each input
            pipeline then reads every `num_input_pipelines`-th volume.

    Returns:
        `tf.data.Dataset` of dicts: `image` float32 `(*size, C)`, `label`
        int32 `(*size)`, `case_id` `tf.string`.
    """
    if int(n) < 1:
        raise ConfigError("phantoms.n", f"expected at least one phantom. Received: n={n!r}")
    shape = _as_shape(size, dim)

    def generate(index):
        return make_phantom((seed, int(index)), size=shape, channels=channels, dim=dim)

    def to_volume(index):
        image, label = tf.numpy_function(generate, [index], [tf.float32, tf.int32], stateful=False)
        image.set_shape([*shape, channels])
        label.set_shape(shape)
        case_id = tf.strings.join(["phantom_", tf.strings.as_string(index, width=3, fill="0")])
        return {"image": image, "label": label, "case_id": case_id}

    indices = np.array(_shard_range(int(n), input_context), np.int64)
    return tf.data.Dataset.from_tensor_slices(indices).map(
        to_volume, num_parallel_calls=AUTOTUNE, deterministic=True
    )


def shard_volumes(shard_dir, *, input_context=None, deterministic=True):
    """The volumes of a prepared shard folder (one with `manifest.json`).

    Args:
        shard_dir: folder written by `ssl3d prepare`.
        input_context: optional `tf.distribute.InputContext`; shard files are
            then split across input pipelines (file `i` goes to pipeline
            `i % num_input_pipelines`).
        deterministic: bool, keep the parallel interleave's order fixed.
            Default True.

    Returns:
        `tf.data.Dataset` of dicts: `image` float32 `(*spatial, C)`, `label`
        int32 `(*spatial)` or `(0,)`, `case_id` `tf.string`; its cardinality is
        the number of cases in the files read.

    Raises:
        DataError: the manifest is missing or invalid, a shard file is missing,
            or there are fewer shard files than input pipelines.
    """
    shard_dir = Path(shard_dir)
    manifest = Manifest.read(shard_dir)
    shards = manifest["shards"]
    if not shards:
        raise DataError(shard_dir / MANIFEST_NAME, "manifest lists no shards. Received: shards=[]")
    missing = [s["path"] for s in shards if not (shard_dir / s["path"]).is_file()]
    if missing:
        raise DataError(shard_dir, f"shard file(s) listed in the manifest are missing. "
                        f"Received: missing={missing[:3]}{' ...' if len(missing) > 3 else ''}")
    chosen = [shards[i] for i in _shard_range(len(shards), input_context)]
    if not chosen:
        raise DataError(shard_dir, f"{len(shards)} shard file(s) cannot be split across "
                        f"{input_context.num_input_pipelines} input pipelines; prepare with a "
                        f"smaller --examples-per-shard. Received: {len(shards)} shards")
    files = [str(shard_dir / s["path"]) for s in chosen]
    dim, channels = int(manifest["dim"]), int(manifest["channels"])
    dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 4),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    dataset = dataset.map(
        lambda record: parse_example(record, dim=dim, channels=channels),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    count = sum(int(s["count"]) for s in chosen)
    return dataset.apply(tf.data.experimental.assert_cardinality(count))


def volume_slices(volumes, *, slice_axis=0):
    """Cut 3D volumes into 2D slices along `slice_axis` (the 2D-slice baseline).

    Args:
        volumes: dataset of 3D volume dicts (`image` `(D, H, W, C)`).
        slice_axis: int 0, 1 or 2, the spatial axis to slice along. Default 0.

    Returns:
        dataset of 2D dicts: `image` `(H', W', C)`, `label` `(H', W')` or `(0,)`,
        `case_id` as `ssl3d_keras.data.sources.slice_case_id` names it
        (`"<case>/z040"`); the other two axes keep their order.
    """
    if slice_axis not in (0, 1, 2):
        raise ConfigError("slice_axis", f"expected 0, 1 or 2. Received: slice_axis={slice_axis!r}")
    perm = [slice_axis] + [a for a in range(3) if a != slice_axis]
    channels = volumes.element_spec["image"].shape[-1]

    def to_slices(volume):
        image, label = volume["image"], volume["label"]
        images = tf.transpose(image, [*perm, 3])
        n = tf.shape(images)[0]
        labels = tf.cond(
            tf.size(label) > 0,
            lambda: tf.transpose(tf.reshape(label, tf.shape(image)[:3]), perm),
            lambda: tf.zeros([n, 0], tf.int32),
        )
        ids = _slice_case_ids(volume["case_id"], slice_axis, n)
        images = tf.ensure_shape(images, [None, None, None, channels])
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "case_id": ids})

    return volumes.flat_map(to_slices)


def _slice_case_ids(case_id, axis, n):
    """`sources.slice_case_id(case_id, axis, i, n)` for i in range(n), in the graph."""
    digits = tf.strings.as_string(tf.range(n))
    width = tf.maximum(3, tf.strings.length(tf.strings.as_string(tf.maximum(n - 1, 0))))
    zeros = tf.strings.substr(tf.fill([n], "0" * 20), tf.zeros([n], tf.int32),
                              width - tf.strings.length(digits))
    prefix = tf.strings.join([case_id, "/", "xyz"[axis]])
    return tf.strings.join([tf.fill([n], prefix), zeros, digits])


def _slice_count(manifest, slice_axis, input_context):
    """Number of slices in the shard files this pipeline reads, or None if the manifest can't say."""
    shards = manifest["shards"]
    names = {shards[i]["path"] for i in _shard_range(len(shards), input_context)}
    cases = manifest.get("cases") or []
    if len(cases) == 0 or any("final_shape" not in c or "shard" not in c for c in cases):
        return None
    return sum(int(c["final_shape"][slice_axis]) for c in cases if c["shard"] in names)


def open_volumes(path_or_none, *, dim=3, phantoms=None, slice_axis=0, input_context=None):
    """Open the volumes a run trains on.

    Args:
        path_or_none: `None` for synthetic phantoms, or a folder prepared by
            `ssl3d prepare` (it has `manifest.json`).
        dim: 3, or 2 for 2D examples (2D data, or slices of 3D data along
            `slice_axis`: the paper's 2D-slice baseline). Default 3.
        phantoms: dict for the phantoms: `n` (16), `size` (64), `channels`
            (1), `seed` (0), `dim` (3: 3D phantoms, sliced when `dim=2`; 2:
            native 2D phantoms).
        slice_axis: int, axis of a 3D volume to slice along when `dim=2`.
        input_context: optional `tf.distribute.InputContext` to split the data
            across input pipelines.

    Returns:
        `tf.data.Dataset` of volume dicts (`image`, `label`, `case_id`).

    Raises:
        DataError: the path does not exist or is not a prepared folder (a raw
            NIfTI folder must be prepared first).
        ConfigError: unknown phantom key, or `dim=3` on 2D data.
    """
    if dim not in (2, 3):
        raise ConfigError("dim", f"expected 2 or 3. Received: dim={dim!r}")
    if path_or_none is None:
        options = dict(PHANTOM_DEFAULTS)
        for key, value in (phantoms or {}).items():
            if key not in PHANTOM_DEFAULTS:
                raise ConfigError(f"phantoms.{key}", f"unknown key; known keys: "
                                  f"{', '.join(PHANTOM_DEFAULTS)}. Received: {key}={value!r}")
            options[key] = value
        source_dim = int(options.pop("dim"))
        volumes = phantom_volumes(**options, dim=source_dim, input_context=input_context)
        if source_dim == 3 and dim == 2:
            count = len(_shard_range(int(options["n"]), input_context))
            shape = _as_shape(options["size"], 3)
            return volume_slices(volumes, slice_axis=slice_axis).apply(
                tf.data.experimental.assert_cardinality(count * shape[slice_axis]))
    else:
        path = Path(path_or_none)
        if not path.exists():
            raise DataError(path, f"no such file or folder. Received: {path_or_none!r}")
        if not (path.is_dir() and Manifest.exists(path)):
            what = "a file" if path.is_file() else "a folder without manifest.json"
            raise DataError(path, "not a prepared shard folder; run `ssl3d prepare "
                            f"{path} --out DIR` first and pass DIR. Received: {what}")
        volumes = shard_volumes(path, input_context=input_context)
        manifest = Manifest.read(path)
        source_dim = int(manifest["dim"])
        if source_dim == 3 and dim == 2:
            slices = volume_slices(volumes, slice_axis=slice_axis)
            count = _slice_count(manifest, slice_axis, input_context)
            if count is None:
                return slices
            return slices.apply(tf.data.experimental.assert_cardinality(count))
    if source_dim != dim:
        raise ConfigError("dim", f"the data are {source_dim}D and cannot be read as {dim}D. "
                          f"Received: dim={dim}")
    return volumes
