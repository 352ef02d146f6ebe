"""3D jigsaw puzzles (3D-Jig): which permutation shuffled the grid of patches?

The volume is cut into an `n x n x n` grid (`n x n` in 2D) of cells of side
`size // n`; one patch of side `cell - jitter` is cut from each cell, at a random
offset in `[0, jitter]` per patch and axis in training and at the centre offset
in evaluation. The patches are shuffled by one of P fixed permutations
(deterministic from `permutation_seed`, stored with the model), and the
network predicts which.

The permutation set (`permutation_set`): the paper asks for a large minimum
Hamming distance between the P permutations. When the number of patches is a
prime power (27 for 3 x 3 x 3, 9 for 3 x 3) and P fits, the default is the
affine maps of the finite field GF(27) (`ops.permutations.affine_permutations`):
minimum distance 26 of 27, the optimum. Otherwise (P > 72 on a 2D 3 x 3 grid,
or a 6 x 6 grid) it is the greedy max-min search (`"greedy"`, 25 of 27 for
P = 100, what every run used before the option existed).

The pieces every grid-of-patches task shares (`patch_shape_for`,
`encode_patches`) live in `ssl3d_keras.tasks.patches`.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.ops.patches import grid_patches
from ssl3d_keras.ops.permutations import permutation_set as make_permutation_set
from ssl3d_keras.ops.permutations import resolve_permutation_set
from ssl3d_keras.tasks.base import ClassificationTask
from ssl3d_keras.tasks.patches import encode_patches, patch_shape_for
from ssl3d_keras.tasks.registry import register_task


def _check_permutations(permutations, n_items, n_perms):
    perms = np.asarray(permutations)
    if perms.shape != (n_perms, n_items) or not np.issubdtype(perms.dtype, np.integer):
        raise ConfigError(
            "permutations",
            f"expected {n_perms} integer rows of {n_items} items. Received shape {perms.shape}",
        )
    if not (np.sort(perms, axis=1) == np.arange(n_items)).all():
        raise ConfigError("permutations", f"every row must be a permutation of 0..{n_items - 1}")
    if len(np.unique(perms, axis=0)) != n_perms:
        raise ConfigError("permutations", "rows must be distinct")
    perms = perms.astype(np.int32)
    perms.setflags(write=False)
    return perms


@register_task("jigsaw")
@keras.saving.register_keras_serializable(package="ssl3d")
class JigsawTask(ClassificationTask):
    """Solve a jigsaw puzzle of `grid**dim` patches: predict the permutation.

    An example is `inputs[i] = patches[permutations[target][i]]` for
    `i = 0 .. grid**dim - 1`, patches in raster order of their cells. Network:
    the shared encoder on each patch, concatenated features -> big fully head ->
    P logits; loss: softmax cross-entropy.

    Args:
        input_shape: tuple, `(D, H, W, C)` (3D) or `(H, W, C)` (2D).
        encoder: a `keras.Model`, a dict of `UNetEncoder` arguments, or `None`
            for the paper's U-Net encoder (it needs patches of at least 32).
        grid: int, cells per axis. Default `3` (27 patches in 3D, 9 in 2D).
        jitter: int, maximal random offset of a patch in its cell. Default `3`.
        num_permutations: int, P, the number of classes. Default `100`.
        permutation_seed: int, seed of the permutation set. Default `0`.
        permutation_set: `"auto"` (default), `"affine"` or `"greedy"`: how
            the set is built. `"affine"`: P affine maps of GF(`grid**dim`),
            the identity first, minimum pairwise Hamming distance
            `grid**dim - 1` (26 of 27); needs a prime-power number of patches
            and `P <= n(n - 1)`. `"greedy"`: the max-min search over random
            permutations (25 of 27 for P = 100). `"auto"` is `"affine"` where
            it applies, else `"greedy"`; `get_config` records the resolved
            name, and a config without the key (saved before the option
            existed, when every set was greedy) loads as `"greedy"`.
        permutations: optional `(P, grid**dim)` integer array-like: the
            permutation set itself (`get_config` stores it, so a saved task
            keeps its exact classes whatever `permutation_set` says).
            Default `None`: built from `permutation_set` and the seed.
        head_units: tuple of int. Default `(2048, 1024)` (the paper).
        head_dropout: float. Default `0.5` (the paper).
        **kwargs: `name`, `trainable`, `dtype`; any other key is a `ConfigError`.

    Attributes:
        permutations: np.int32 `(P, grid**dim)`, read-only.

    Call arguments:
        inputs: float32 `(batch, grid**dim, *patch, C)`.
        training: bool.

    Output shape:
        float32 logits `(batch, P)`.

    Example:

    >>> from ssl3d_keras import tasks
    >>> task = tasks.get("jigsaw", input_shape=(128, 128, 128, 1))
    >>> patches, label = task.transform(tf.random.normal((128, 128, 128, 1)), tf.constant([0, 1]))
    >>> patches.shape
    TensorShape([27, 39, 39, 39, 1])
    """

    def __init__(
        self,
        input_shape,
        encoder=None,
        *,
        grid=3,
        jitter=3,
        num_permutations=100,
        permutation_seed=0,
        permutation_set="auto",
        permutations=None,
        head_units=(2048, 1024),
        head_dropout=0.5,
        **kwargs,
    ):
        super().__init__(input_shape, encoder, head_units=head_units,
                         head_dropout=head_dropout, **kwargs)
        self.grid = int(grid)
        self.jitter = int(jitter)
        self.patch_shape = patch_shape_for(self, self.grid, self.jitter)
        self.num_patches = self.grid**self.dim
        self.num_permutations = int(num_permutations)
        self.permutation_seed = int(permutation_seed)
        limit = math.factorial(self.num_patches)
        if not 2 <= self.num_permutations <= limit:
            raise ConfigError(
                "num_permutations",
                f"must be between 2 and {self.num_patches}! = {limit}. "
                f"Received: {num_permutations}",
            )
        self.permutation_set = resolve_permutation_set(
            permutation_set, self.num_patches, self.num_permutations
        )
        if permutations is None:
            permutations = make_permutation_set(
                self.permutation_set, self.num_patches, self.num_permutations,
                seed=self.permutation_seed,
            )
        self.permutations = _check_permutations(
            permutations, self.num_patches, self.num_permutations
        )
        self._make_head()

    @property
    def num_classes(self):
        return self.num_permutations

    def transform(self, volume, seed, training=True):
        """Cut the grid of patches and shuffle it by a permutation drawn from `seed`.

        Args:
            volume: float32 `(D, H, W, C)` or `(H, W, C)`.
            seed: int32 `[2]`, stateless seed.
            training: bool; random jitter per patch if True, centre cut if False.

        Returns:
            `(patches (grid**dim, *patch, C) float32, permutation index int32 scalar)`.
        """
        volume = tf.convert_to_tensor(volume, tf.float32)
        label, patch_seed = self._draw_label(seed)
        patches = grid_patches(volume, self.grid, self.jitter, patch_seed, training)
        order = tf.gather(tf.constant(self.permutations), label)
        shuffled = tf.gather(patches, order)
        return tf.ensure_shape(shuffled, (self.num_patches, *self.patch_shape, self.channels)), label

    def call(self, inputs, training=None):
        features = encode_patches(self.encoder, inputs, training=training)
        # float32 logits under any precision policy (the head's output layer is float32).
        return self.head(features, training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "grid": self.grid,
            "jitter": self.jitter,
            "num_permutations": self.num_permutations,
            "permutation_seed": self.permutation_seed,
            "permutation_set": self.permutation_set,
            "permutations": self.permutations.tolist(),
        }

    @classmethod
    def from_config(cls, config):
        # Configs saved before `permutation_set` existed were trained with the greedy set.
        return super().from_config({"permutation_set": "greedy", **config})
