"""Relative 3D patch location (3D-RPL): where is the query patch relative to the centre?

The volume is cut into the same grid of jittered patches as the jigsaw task.
The reference is the centre cell (index `grid**dim // 2` in raster order); the
query is one of the other `grid**dim - 1` cells, and the class is its rank among
the non-centre cells in raster order (so class `k` is cell `k` below the centre
and cell `k + 1` above it).
"""

import keras
import numpy as np
import tensorflow as tf

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.ops.patches import grid_patches
from ssl3d_keras.tasks.base import ClassificationTask
from ssl3d_keras.tasks.patches import encode_patches, patch_shape_for
from ssl3d_keras.tasks.registry import register_task


@register_task("rpl")
@keras.saving.register_keras_serializable(package="ssl3d")
class RelativePatchLocationTask(ClassificationTask):
    """Predict the grid cell of a query patch relative to the centre patch.

    Network: the shared encoder on (centre, query), concatenated features ->
    big fully head -> `grid**dim - 1` logits (26 in 3D, 8 in 2D); loss: softmax
    cross-entropy.

    Args:
        input_shape: tuple, `(D, H, W, C)` (3D) or `(H, W, C)` (2D).
        encoder: a `keras.Model`, a dict of `UNetEncoder` arguments, or `None`
            for the paper's U-Net encoder (it needs patches of at least 32).
        grid: int, odd number of cells per axis (the centre cell must exist). Default `3`.
        jitter: int, maximal random offset of a patch in its cell. Default `3`.
        head_units: tuple of int. Default `(2048, 1024)` (the paper).
        head_dropout: float. Default `0.5` (the paper).
        **kwargs: `name`, `trainable`, `dtype`; any other key is a `ConfigError`.

    Call arguments:
        inputs: float32 `(batch, 2, *patch, C)`: (centre, query) per example.
        training: bool.

    Output shape:
        float32 logits `(batch, grid**dim - 1)`.

    Example:

    >>> from ssl3d_keras import tasks
    >>> task = tasks.get("rpl", input_shape=(128, 128, 128, 1))
    >>> pair, label = task.transform(tf.random.normal((128, 128, 128, 1)), tf.constant([0, 1]))
    >>> pair.shape
    TensorShape([2, 39, 39, 39, 1])
    >>> task.cell_offset(label)  # query cell minus centre cell, per axis
    (1, 1, -1)
    """

    def __init__(
        self,
        input_shape,
        encoder=None,
        *,
        grid=3,
        jitter=3,
        head_units=(2048, 1024),
        head_dropout=0.5,
        **kwargs,
    ):
        super().__init__(input_shape, encoder, head_units=head_units,
                         head_dropout=head_dropout, **kwargs)
        if int(grid) % 2 != 1:
            raise ConfigError("grid", f"must be odd so that a centre cell exists. Received: {grid}")
        self.grid = int(grid)
        self.jitter = int(jitter)
        self.patch_shape = patch_shape_for(self, self.grid, self.jitter)
        self.centre = self.grid**self.dim // 2
        self._make_head()

    @property
    def num_classes(self):
        return self.grid**self.dim - 1

    def query_cell(self, label):
        """Raster index of the grid cell of class `label` (skips the centre)."""
        label = int(label)
        return label + int(label >= self.centre)

    def cell_offset(self, label):
        """Offset `(dz, dy, dx)` (`(dy, dx)` in 2D) in cells of class `label`'s query from the centre."""
        coords = np.unravel_index(self.query_cell(label), (self.grid,) * self.dim)
        return tuple(int(c) - self.grid // 2 for c in coords)

    def transform(self, volume, seed, training=True):
        """Cut the centre patch and a query patch drawn from `seed`.

        Args:
            volume: float32 `(D, H, W, C)` or `(H, W, C)`.
            seed: int32 `[2]`, stateless seed.
            training: bool; random jitter per patch if True, centre cut if False.

        Returns:
            `(pair (2, *patch, C) float32 = (centre, query), class int32 scalar)`.
        """
        volume = tf.convert_to_tensor(volume, tf.float32)
        label, patch_seed = self._draw_label(seed)
        cell = label + tf.cast(label >= self.centre, tf.int32)
        patches = grid_patches(volume, self.grid, self.jitter, patch_seed, training)
        pair = tf.gather(patches, tf.stack([tf.constant(self.centre, tf.int32), cell]))
        return tf.ensure_shape(pair, (2, *self.patch_shape, self.channels)), label

    def call(self, inputs, training=None):
        features = encode_patches(self.encoder, inputs, training=training)
        # float32 logits under any precision policy (the head's output layer is float32).
        return self.head(features, training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "grid": self.grid,
            "jitter": self.jitter,
        }
