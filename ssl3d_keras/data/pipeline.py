"""The example stream: volumes in, batches of proxy examples out.

```
volumes (ssl3d_keras.data.volumes: phantoms | shards -> (2D slices))
    -> cache -> per-epoch seeded shuffle of volumes -> global example index
    -> skip to start_batch -> random crop -> task transform -> batch -> prefetch
```

Every random choice is stateless and derived from the pipeline `seed` and the
example's global index (epoch * examples_per_epoch + position), never from
iterator state. So the same seed gives the same batches, and `start_batch=k`
gives exactly batches k, k+1, ... of the uninterrupted stream, which is how a
training run resumes; skipped examples are dropped as indices, before any crop
or transform runs on them. The volume order of epoch e is a buffer shuffle
seeded by (seed, e) alone: TF's global seed (`keras.utils.set_random_seed`)
changes nothing, so the data order of a run does not depend on what else
seeded TensorFlow. The volume sources (`open_volumes` and friends) live in
`ssl3d_keras.data.volumes` and are still importable from here.
"""


import numpy as np
import tensorflow as tf

from ssl3d_keras.config import check_int
from ssl3d_keras.data.manifest import Manifest
from ssl3d_keras.data.volumes import (  # noqa: F401  (the volume sources, re-exported)
    PHANTOM_DEFAULTS,
    open_volumes,
    phantom_volumes,
    shard_volumes,
    volume_slices,
)
from ssl3d_keras.errors import ConfigError, DataError
from ssl3d_keras.ops.patches import random_crop_start

__all__ = ["cases_smaller_than", "make_pipeline", "random_crop_pair"]

AUTOTUNE = tf.data.AUTOTUNE

# Independent random streams folded into the pipeline seed.
_SHUFFLE, _CROP, _TRANSFORM = 1, 2, 3


def _seeded_shuffle(dataset, buffer_size, seed):
    """Buffer shuffle of `dataset` whose order depends on `seed` only.

    `Dataset.shuffle(seed=...)` mixes its seed with TF's global seed (and fails
    on a tensor seed once the global seed is 0), so the raw shuffle op is given
    both seeds directly.

    Args:
        dataset: a `tf.data.Dataset`.
        buffer_size: int, elements held in the shuffle buffer.
        seed: int64 tensor `[2]`; not both zero (C++ reads (0, 0) as "random").
    """
    specs = tf.nest.flatten(dataset.element_spec)
    variant = tf.raw_ops.ShuffleDataset(
        input_dataset=tf.data.experimental.to_variant(dataset),
        buffer_size=tf.constant(buffer_size, tf.int64),
        seed=seed[0],
        seed2=seed[1],
        reshuffle_each_iteration=False,
        output_types=[s.dtype for s in specs],
        output_shapes=[s.shape for s in specs],
    )
    return tf.data.experimental.from_variant(variant, dataset.element_spec)


def _derived_seed(key, stream, index):
    """int32 [2] stateless seed for example `index` of random stream `stream`."""
    seed = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(key, stream), index)
    return tf.cast(tf.bitwise.bitwise_and(seed, 0x7FFFFFFF), tf.int32)


def cases_smaller_than(manifest, crop_size, *, dim=3, slice_axis=0):
    """Ids of the prepared cases that `random_crop_pair` would have to zero-pad.

    Padding is a shortcut for some proxy tasks (a rotation moves the padded band),
    so a run says which volumes need it instead of padding silently.

    Args:
        manifest: a `Manifest` (or a dict with its `dim` and `cases`).
        crop_size: tuple of `dim` ints.
        dim: 3, or 2 (for 3D manifests: slices along `slice_axis`).
        slice_axis: the axis cut away when a 3D dataset is read as 2D slices.

    Returns:
        list of case ids (possibly empty).
    """
    if not isinstance(manifest, Manifest):  # a plain dict of the manifest's keys
        manifest = Manifest(dim=int(manifest.get("dim", 3)), channels=1,
                            cases=list(manifest.get("cases", [])))
    return manifest.cases_smaller_than(crop_size, dim=dim, slice_axis=slice_axis)


def random_crop_pair(image, label, size, seed):
    """The same random window of an image and its label (label may be empty).

    Axes shorter than the crop are zero-padded (label 0) symmetrically first.

    Args:
        image: `(*spatial, C)` tensor.
        label: `(*spatial)` int tensor, or shape `(0,)` for none.
        size: tuple of ints, the crop's spatial shape.
        seed: int32 `[2]` stateless seed.

    Returns:
        `(image (*size, C), label (*size) or (0,))`.
    """
    dim = len(size)
    crop = tf.constant(size, tf.int32)
    spatial = tf.shape(image)[:dim]
    pad = tf.maximum(crop - spatial, 0)
    paddings = tf.stack([pad // 2, pad - pad // 2], axis=1)
    spatial = spatial + pad
    offset = random_crop_start(spatial, crop, seed)

    image = tf.pad(image, tf.concat([paddings, [[0, 0]]], 0))
    image = tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([crop, [-1]], 0))
    image = tf.ensure_shape(image, [*size, image.shape[-1]])
    def crop_label():
        return tf.slice(tf.pad(label, paddings), offset, crop)

    if label.shape.rank == dim:
        return image, tf.ensure_shape(crop_label(), size)
    if label.shape.rank == 1 and label.shape[0] == 0:
        return image, label
    return image, tf.cond(tf.size(label) > 0, crop_label, lambda: tf.zeros([0], label.dtype))


def make_pipeline(volumes, transform, *, batch_size, seed=0, crop_size=None, crops_per_volume=1,
                  shuffle_volumes=64, cache=False, repeat=True, deterministic=True, start_batch=0,
                  drop_remainder=True, input_context=None):
    """Batches of proxy examples from a dataset of volumes.

    Args:
        volumes: `tf.data.Dataset` of dicts with `image` `(*spatial, C)` and
            `label` (from `open_volumes`).
        transform: `transform(image, seed) -> (inputs, target)`, pure TF with an
            int32 `[2]` stateless seed, e.g. `functools.partial(task.transform,
            training=True)`; `None` yields `(image, label)` pairs (cropped together).
        batch_size: int, examples per batch (per replica under a strategy).
        seed: int, seed of every random choice of the pipeline. Default 0.
        crop_size: optional int or tuple, spatial shape of the random crops
            taken before the transform. Default None (whole volumes).
        crops_per_volume: int, crops (examples) taken from each volume read.
            Default 1.
        shuffle_volumes: int, shuffle buffer in volumes, re-seeded each epoch
            (a full permutation when >= the number of volumes); 0 keeps the
            order. Default 64.
        cache: bool or a file path: cache the volumes (in memory, or in that
            file) after the first epoch. Default False.
        repeat: bool, endless epochs (True) or one epoch. Default True.
        deterministic: bool, parallel stages keep their order. Default True.
        start_batch: int, the first batch to yield; batches before it are
            skipped as indices without running the transform. Default 0.
        drop_remainder: bool, drop a final partial batch. Default True.
        input_context: optional `tf.distribute.InputContext`; each input
            pipeline folds its id into the seed so workers draw differently.

    Returns:
        `tf.data.Dataset` of `(inputs, target)` with a leading batch axis,
        e.g. `(batch, *crop_size, C)` inputs for the rotation task.

    Example:

    >>> import functools
    >>> import ssl3d_keras
    >>> task = ssl3d_keras.tasks.get("rotation", input_shape=(32, 32, 32, 1))
    >>> volumes = open_volumes(None, phantoms=dict(n=8, size=48))
    >>> batches = make_pipeline(volumes, functools.partial(task.transform, training=True),
    ...                         batch_size=4, crop_size=32)
    """
    check_int("batch_size", batch_size)
    check_int("crops_per_volume", crops_per_volume)
    if isinstance(cache, str) and cache == "auto":
        # "auto" is a config value resolved by the run; here it would name a cache file.
        raise ConfigError("cache", "expected True, False or a file path; resolve the config "
                          "value 'auto' first (ssl3d_keras.training.run.resolve_cache). "
                          "Received: cache='auto'")
    if not isinstance(start_batch, (int, np.integer)) or start_batch < 0:
        raise ConfigError("start_batch", f"expected an int >= 0. Received: start_batch={start_batch!r}")
    rank = volumes.element_spec["image"].shape.rank
    if crop_size is not None:
        if np.isscalar(crop_size):
            if rank is None:
                raise ConfigError("crop_size", "the volumes' rank is unknown; give one size per "
                                  f"spatial axis. Received: crop_size={crop_size!r}")
            crop_size = (int(crop_size),) * (rank - 1)
        crop_size = tuple(int(s) for s in crop_size)
        if (rank is not None and len(crop_size) != rank - 1) or min(crop_size) < 1:
            expected = "positive sizes" if rank is None else f"{rank - 1} positive sizes"
            raise ConfigError("crop_size", f"expected {expected} for volumes of shape "
                              f"{volumes.element_spec['image'].shape}. "
                              f"Received: crop_size={crop_size!r}")

    pipeline_id = 0 if input_context is None else input_context.input_pipeline_id
    key = tf.constant([int(seed), pipeline_id], tf.int64)

    if cache:
        volumes = volumes.cache() if cache is True else volumes.cache(str(cache))
    n_volumes = int(volumes.cardinality())
    if n_volumes == 0:
        raise DataError("volumes", "the dataset holds no volumes. Received: 0 volumes")
    finite = n_volumes > 0
    start = int(start_batch) * int(batch_size)
    per_epoch = n_volumes * crops_per_volume if finite else None
    # With a known epoch length whole epochs are skipped without reading them.
    first_epoch, skip = divmod(start, per_epoch) if finite else (0, start)

    def epoch_volumes(epoch):
        if not shuffle_volumes:
            return volumes
        # Two int64 seeds drawn from the epoch's seed (fold_in's own output keeps `epoch`
        # verbatim); the second is forced odd so the pair is never (0, 0).
        seeds = tf.random.stateless_uniform(
            [2], _derived_seed(key, _SHUFFLE, epoch), minval=None, maxval=None, dtype=tf.int64)
        seeds = tf.stack([seeds[0], tf.bitwise.bitwise_or(seeds[1], 1)])
        return _seeded_shuffle(volumes, shuffle_volumes, seeds)

    def numbered_epoch(epoch):
        # Global volume slot: epoch * n_volumes + position in the epoch. Numbered
        # inside the epoch, so the epoch range is the stream's only source: a
        # tf.data service that hands whole epochs to its workers keeps the slots.
        first_slot = epoch * n_volumes if finite else 0
        return epoch_volumes(epoch).enumerate(start=first_slot)

    last_epoch = np.iinfo(np.int64).max if repeat else 1
    stream = tf.data.Dataset.range(first_epoch, last_epoch).flat_map(numbered_epoch)
    stream = stream.skip(skip // crops_per_volume)
    if crops_per_volume > 1:
        stream = stream.flat_map(
            lambda slot, volume: tf.data.Dataset.zip(
                tf.data.Dataset.range(slot * crops_per_volume, (slot + 1) * crops_per_volume),
                tf.data.Dataset.from_tensors(volume).repeat(crops_per_volume),
            )
        ).skip(skip % crops_per_volume)

    def make_example(index, volume):
        image, label = volume["image"], volume["label"]
        if crop_size is not None:
            image, label = random_crop_pair(image, label, crop_size,
                                            _derived_seed(key, _CROP, index))
        if transform is None:
            return image, label
        return transform(image, _derived_seed(key, _TRANSFORM, index))

    examples = stream.map(make_example, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    batches = examples.batch(batch_size, drop_remainder=drop_remainder,
                             num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    return batches.prefetch(AUTOTUNE).with_options(options)
