"""Training patches for segmentation: random crops, a share centred on the foreground.

A tumour of 1 % of the volume is rarely inside a uniform random crop, so, as
nnU-Net does, a share of the patches is centred on a voxel drawn uniformly from
the labelled foreground (any class > 0); the rest are uniform. Every random
choice comes from a stateless seed, so a patch is a pure function of (volume,
seed) and a resumed run sees the patches an uninterrupted one would.

Example:

>>> import numpy as np
>>> label = np.zeros((48, 48, 48), "int32")
>>> label[40, 5, 20] = 1                      # a one-voxel "tumour"
>>> image = np.random.default_rng(0).normal(size=(48, 48, 48, 1)).astype("float32")
>>> patch, patch_label = foreground_crop(image, label, (16, 16, 16), seed=[1, 2],
...                                      foreground_share=1.0)
>>> patch.shape, int(patch_label.numpy().sum())
(TensorShape([16, 16, 16, 1]), 1)
"""

import numpy as np
import tensorflow as tf

from ssl3d_keras.errors import ConfigError

__all__ = ["foreground_crop", "label_lookup", "segmentation_batches"]


def foreground_crop(image, label, size, seed, *, foreground_share=1 / 3):
    """The same window of an image and its label, centred on the foreground with some probability.

    Axes shorter than the window are zero-padded (label 0) symmetrically first.

    Args:
        image: float tensor `(*spatial, C)`.
        label: int tensor `(*spatial)`.
        size: tuple of ints, the window's spatial shape.
        seed: int32 `[2]` stateless seed.
        foreground_share: float in [0, 1], probability that the window is
            centred on a foreground voxel (when the label has any); otherwise
            its corner is uniform over the valid positions.

    Returns:
        `(image (*size, C), label (*size))`.
    """
    dim = len(size)
    crop = tf.constant(size, tf.int32)
    spatial = tf.shape(label)[:dim]
    pad = tf.maximum(crop - spatial, 0)
    paddings = tf.stack([pad // 2, pad - pad // 2], axis=1)
    image = tf.pad(image, tf.concat([paddings, [[0, 0]]], 0))
    label = tf.pad(label, paddings)
    spatial = spatial + pad
    limit = spatial - crop  # the largest valid corner per axis

    seeds = tf.random.experimental.stateless_split(seed, 3)
    uniform = tf.random.stateless_uniform([dim], seeds[0])
    random_corner = tf.cast(tf.floor(uniform * tf.cast(limit + 1, tf.float32)), tf.int32)

    foreground = tf.where(label > 0)  # (n, dim) int64
    count = tf.shape(foreground, out_type=tf.int64)[0]
    want_foreground = tf.random.stateless_uniform([], seeds[1]) < foreground_share

    def centred_corner():
        pick = tf.random.stateless_uniform([], seeds[2], minval=0, maxval=count, dtype=tf.int64)
        centre = tf.cast(foreground[pick], tf.int32)
        return tf.clip_by_value(centre - crop // 2, 0, limit)

    corner = tf.cond(tf.logical_and(want_foreground, count > 0), centred_corner,
                     lambda: tf.minimum(random_corner, limit))
    image = tf.slice(image, tf.concat([corner, [0]], 0), tf.concat([crop, [-1]], 0))
    label = tf.slice(label, corner, crop)
    return tf.ensure_shape(image, [*size, image.shape[-1]]), tf.ensure_shape(label, size)


def label_lookup(label_map, num_source_labels=256):
    """A lookup vector turning source label values into training classes.

    Args:
        label_map: dict source value -> class (values not listed become 0,
            background), or None for the identity.
        num_source_labels: size of the vector (largest source value + 1).

    Returns:
        int32 numpy array `(num_source_labels,)`, or None for the identity.
    """
    if not label_map:
        return None
    table = np.zeros(int(num_source_labels), np.int32)
    for source, target in label_map.items():
        source, target = int(source), int(target)
        if not 0 <= source < num_source_labels:
            raise ConfigError("data.label_map", f"source label {source} is outside "
                              f"[0, {num_source_labels}). Received: {label_map}")
        table[source] = target
    return table


def segmentation_batches(volumes, *, patch_size, batch_size, seed=0, foreground_share=1 / 3,
                         start_batch=0, shuffle_volumes=64, cache=False):
    """Endless batches of `(image, label)` training patches from labelled volumes.

    Built on `ssl3d_keras.data.pipeline.make_pipeline`, so shuffling, seeding
    and exact resumption (`start_batch`) are the pretraining pipeline's: the
    label rides along as an extra image channel through the shared stream and
    is split off again in the crop.

    Args:
        volumes: `tf.data.Dataset` of dicts with `image` `(*spatial, C)` and
            int `label` `(*spatial)` (already mapped to training classes).
        patch_size: tuple of ints, the patch's spatial shape.
        batch_size: int, patches per batch.
        seed: int, seed of every random choice.
        foreground_share: float, share of patches centred on the foreground.
        start_batch: int, the first batch to yield (resume).
        shuffle_volumes: int, volume shuffle buffer (0 keeps the order).
        cache: bool, keep the volumes in memory after the first pass.

    Returns:
        `tf.data.Dataset` of `(image (batch, *patch, C), label (batch, *patch))`.
    """
    from ssl3d_keras.data.pipeline import make_pipeline

    patch_size = tuple(int(s) for s in patch_size)

    def pack(volume):
        label = tf.cast(volume["label"], tf.float32)[..., None]
        return {"image": tf.concat([volume["image"], label], axis=-1),
                "label": tf.zeros([0], tf.int32)}

    def crop(packed, example_seed):
        image, label = packed[..., :-1], tf.cast(tf.round(packed[..., -1]), tf.int32)
        return foreground_crop(image, label, patch_size, example_seed,
                               foreground_share=foreground_share)

    packed = volumes.map(pack, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return make_pipeline(packed, crop, batch_size=batch_size, seed=seed, crop_size=None,
                         shuffle_volumes=shuffle_volumes, cache=cache, start_batch=start_batch)
