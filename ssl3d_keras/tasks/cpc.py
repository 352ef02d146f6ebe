"""3D contrastive predictive coding (3D-CPC), and its 2D variant.

A volume is cut into a grid of `g` cells per axis. Grid *rows* run along the
first spatial axis (D in 3D, H in 2D), as in the authors' code; a *column* is
a position on the remaining grid axes (`g**2` columns in 3D, `g` in 2D).
Every patch goes through the shared encoder, a global average pool and a
Dense layer to a code. For each column, a GRU reads the "inverted pyramid" of
codes above it and linear heads `W_k` predict the codes of the patches `k`
rows further down the same column.

The pyramid of a column ends at the last context row `r = g // 2 - 1`; row
`r - j` contributes the `(2j + 1)**(dim - 1)` block of cells centred on the
column, mirror-padded at the grid's edges, in raster order, top row first,
then the column's own cell in row `r`:

- 3D, `g = 4` (the paper): the 3 x 3 block of row 0, then the cell of row 1:
  10 steps; predictions for rows 2 and 3.
- 2D, `g = 5` (the authors' 2D recipe), patches overlapping by 50 %: the 3
  cells of row 0 around the column, then its cell of row 1: 4 steps. Row 2
  overlaps row 1 by half a patch (its prediction would be a copy), so it is
  skipped, as in the old 2D code: predictions for rows 3 and 4.

Losses: InfoNCE (the paper's, the default): for every prediction step, each
prediction must pick its true target code among the target codes of every
column of every volume of the global batch (under a distribution strategy the
targets of all replicas are gathered, see `ssl3d_keras.ops.replicas`). `loss="binary"` reproduces the
old code: a sigmoid of the mean dot product, one negative per positive (the
targets of a different column of the same scan, drawn by `transform`).
InfoNCE scores cosine similarities divided by a temperature (0.1) by default,
so a fresh network starts at the `log N` of uninformative codes whatever the
scale of its codes (`similarity`).
"""

import itertools

import keras
import numpy as np
import tensorflow as tf

from ssl3d_keras import losses
from ssl3d_keras.config import check_choice, check_int
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.ops import patches as patch_ops
from ssl3d_keras.ops import replicas as replica_ops
from ssl3d_keras.tasks.base import ProxyTask
from ssl3d_keras.tasks.registry import register_task

LOSSES = ("info_nce", "binary")

# The authors' recipes: 4 x 4 x 4 non-overlapping at 128^3; 5 x 5 overlapping in 2D.
DEFAULT_GRID = {3: 4, 2: 5}
# Size kept by the old code's per-patch "random crop padded back" (3D 7/8, 2D 11/12).
PATCH_CROP_FRACTION = {3: 7 / 8, 2: 11 / 12}
# Spatial axes of a patch the old code flipped, each with probability 1/2, before the crop:
# in 3D only the first (the grid's row axis, `np.flip(patch, 0)`), in 2D none.
PATCH_FLIP_AXES = {3: (0,), 2: ()}
# InfoNCE scores: cosine similarity (L2-normalised codes) or the plain dot product.
SIMILARITIES = ("cosine", "dot")


def _reflect(index, size):
    """Mirror an out-of-range grid index back inside [0, size) (no edge repeat)."""
    if index < 0:
        return -index
    if index >= size:
        return 2 * (size - 1) - index
    return index


def pyramid_cells(grid, dim, skip_rows=0):
    """Context and target cells of every column of a CPC grid (see the module doc).

    Args:
        grid: int >= 2, cells per axis.
        dim: 2 or 3.
        skip_rows: int, rows left out between the last context row and the
            first target row (1 for overlapping patches).

    Returns:
        `(context, targets)`: np.int32 arrays `(columns, steps)` and
        `(columns, predict_steps)` of flat raster indices into the
        `grid**dim` cells; columns in raster order of the non-row axes.

    Raises:
        ConfigError: the grid leaves no row to predict.
    """
    last = grid // 2 - 1
    first_target = last + 1 + skip_rows
    if grid < 2 or first_target >= grid:
        raise ConfigError(
            "grid",
            f"a {'overlapping ' if skip_rows else ''}CPC grid needs at least "
            f"{3 if skip_rows else 2} cells per axis so a row is left to predict. "
            f"Received: grid={grid}",
        )
    shape = (grid,) * dim

    def flat(row, column):
        return int(np.ravel_multi_index((row, *column), shape))

    context, targets = [], []
    for column in itertools.product(range(grid), repeat=dim - 1):
        steps = []
        for row in range(last):
            half = last - row
            for offset in itertools.product(range(-half, half + 1), repeat=dim - 1):
                cell = [_reflect(c + o, grid) for c, o in zip(column, offset, strict=True)]
                steps.append(flat(row, cell))
        steps.append(flat(last, column))
        context.append(steps)
        targets.append([flat(row, column) for row in range(first_target, grid)])
    return np.array(context, np.int32), np.array(targets, np.int32)


def _overlapping_cells(volume, grid):
    """`grid` cells per axis, each two strides wide (50 % overlap), centred in the volume.

    Args:
        volume: tensor `(*spatial, C)` with static spatial shape.
        grid: int.

    Returns:
        Tensor `(grid**dim, *patch, C)` in raster order, `patch = 2 * (size // (grid + 1))`.
    """
    dim = volume.shape.rank - 1
    strides = [int(s) // (grid + 1) for s in volume.shape[:-1]]
    starts = [
        (int(s) - (grid + 1) * t) // 2 for s, t in zip(volume.shape[:-1], strides, strict=True)
    ]
    cells = []
    for index in itertools.product(range(grid), repeat=dim):
        begin = [a + i * t for a, i, t in zip(starts, index, strides, strict=True)] + [0]
        size = [2 * t for t in strides] + [-1]
        cells.append(tf.slice(volume, begin, size))
    return tf.stack(cells)


@register_task("cpc")
@keras.saving.register_keras_serializable(package="ssl3d")
class ContrastivePredictiveCodingTask(ProxyTask):
    """3D contrastive predictive coding (Taleb et al. 2020, after Oord et al. 2018).

    Args:
        input_shape: tuple, one volume `(D, H, W, C)` (3D) or `(H, W, C)` (2D).
        encoder: see `ProxyTask`; it runs on every patch, so its minimum input
            size must not exceed the patch size.
        grid: int or `None`, cells per axis; `None` means 4 in 3D (32^3 patches
            at 128^3) and 5 in 2D (the authors' recipes).
        overlap: bool or `None`, cells overlap by 50 % (stride = patch / 2);
            `None` means `False` in 3D and `True` in 2D (the paper).
        augment: bool, per-patch augmentation in training, as the old code:
            a flip of the first spatial axis with probability 1/2 (3D only;
            the old 2D code did not flip, `PATCH_FLIP_AXES`), then a random
            crop padded back to the patch size. Default `True`.
        code_size: int, size of a patch code. Default 1024 (the paper).
        context_units: int, units of the context GRU. Default 256.
        loss: `"info_nce"` (default, the paper) or `"binary"` (the old code).
        similarity: `"cosine"` (default) or `"dot"`, the InfoNCE score of a
            prediction and a target. `"cosine"` L2-normalises both (so `call`
            returns unit-length codes), as SimCLR and MoCo do: the raw dot
            products of unnormalised codes grow with the input's intensity
            scale and the initialisation, and put the loss of a fresh network
            far above the `log N` of uninformative codes (9.8 against
            log 128 = 4.85 for a tiny encoder without normalisation layers on
            volumes of standard deviation 10); cosine scores keep it at
            `log N` (4.86 there). `"dot"`
            is the plain CPC score (configs saved before this option load
            with it). `loss="binary"` always uses plain dot products, as the
            old code.
        temperature: float, divides the InfoNCE scores. Default 0.1 (for
            cosine scores in [-1, 1]: SimCLR's range is 0.1-0.5, MoCo's 0.07-0.2).
        **kwargs: `name`, `trainable`, `dtype`; anything else is a `ConfigError`.

    `transform(volume, seed, training)` returns:
        inputs: float32 `(g, g, g, *patch, C)` (3D) or `(g, g, *patch, C)` (2D),
            the patch grid (training: augmented patches).
        target: int32 `(columns,)`; the implicit targets are the future codes
            themselves, so this only holds, for each column, a different column
            of the same scan whose targets are the negative of `loss="binary"`
            (ignored by InfoNCE).

    Call arguments:
        inputs: float `(batch, g, g, g, *patch, C)` (2D: `(batch, g, g, *patch, C)`).

    Returns (of `call`):
        dict with `"predictions"` and `"targets"`, float
        `(batch, columns, predict_steps, code_size)`: the predicted and the
        encoded future codes of every column (L2-normalised for InfoNCE with
        `similarity="cosine"`).

    Example:
    ```python
    from ssl3d_keras import tasks
    task = tasks.get("cpc", input_shape=(128, 128, 128, 1))
    inputs, target = task.transform(volume, seed=tf.constant([0, 1]))
    outputs = task(inputs[None])
    loss, accuracy = task.loss_and_accuracy(target[None], outputs)
    ```
    """

    def __init__(
        self,
        input_shape,
        encoder=None,
        *,
        grid=None,
        overlap=None,
        augment=True,
        code_size=1024,
        context_units=256,
        loss="info_nce",
        similarity="cosine",
        temperature=0.1,
        **kwargs,
    ):
        super().__init__(input_shape, encoder, **kwargs)
        check_choice("loss", loss, LOSSES)
        check_choice("similarity", similarity, SIMILARITIES)
        check_int("code_size", code_size)
        check_int("context_units", context_units)
        if grid is not None:
            check_int("grid", grid, 2)
        if not float(temperature) > 0:
            raise ConfigError("temperature", f"expected a float > 0. Received: {temperature!r}")
        self.grid = grid
        self.overlap = overlap
        self.augment = bool(augment)
        self.code_size = code_size
        self.context_units = context_units
        # Not `self.loss`: keras.Model.compile() overwrites that attribute.
        self.loss_kind = loss
        self.similarity = similarity
        self.temperature = float(temperature)

        self.cells_per_axis = DEFAULT_GRID[self.dim] if grid is None else grid
        self.overlapping = (self.dim == 2) if overlap is None else bool(overlap)
        self.patch_shape = self._patch_shape()
        context, targets = pyramid_cells(
            self.cells_per_axis, self.dim, skip_rows=int(self.overlapping)
        )
        self.context_cells = context
        self.target_cells = targets
        self.num_columns, self.context_steps = context.shape
        self.predict_steps = targets.shape[1]

        self.pool = (
            keras.layers.GlobalAveragePooling3D
            if self.dim == 3
            else keras.layers.GlobalAveragePooling2D
        )(name="patch_pool")
        # Codes and predictions in float32: the contrastive scores stay exact under
        # mixed precision (the encoder and the GRU still run in the compute dtype).
        self.code_layer = keras.layers.Dense(code_size, dtype="float32", name="patch_code")
        self.context_network = keras.layers.GRU(context_units, name="context_gru")
        self.predictors = [
            keras.layers.Dense(code_size, dtype="float32", name=f"predict_{k + 1}_rows_ahead")
            for k in range(self.predict_steps)
        ]
        # InfoNCE's chance level depends on the local batch; updated when a loss is traced.
        self._num_candidates = self.num_columns

    def _patch_shape(self):
        spatial = self.volume_shape[:-1]
        g = self.cells_per_axis
        if self.overlapping:
            shape = tuple(2 * (int(s) // (g + 1)) for s in spatial)
        else:
            shape = tuple(int(s) for s in patch_ops.grid_patch_size(spatial, g, 0))
        minimum = getattr(self.encoder, "min_input_size", 1)
        if min(shape) < minimum:
            raise ConfigError(
                "grid",
                f"patches of {shape} are smaller than the encoder's minimum input size "
                f"{minimum}; use a smaller grid or a shallower encoder. "
                f"Received: grid={g}, input_shape={self.volume_shape}",
            )
        return shape

    # --- data ------------------------------------------------------------------------------

    def transform(self, volume, seed, training=True):
        # Static shape for the patch geometry; a volume of another shape fails here, by name.
        volume = tf.ensure_shape(tf.convert_to_tensor(volume, tf.float32), self.volume_shape)
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
        cut_seed, augment_seed, negative_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 3)
        )
        if self.overlapping:
            cells = _overlapping_cells(volume, self.cells_per_axis)
        else:
            cells = patch_ops.grid_patches(volume, self.cells_per_axis, 0, cut_seed, training)
        if training and self.augment:
            cells = self._augment_cells(cells, augment_seed)
        inputs = tf.reshape(
            cells, (self.cells_per_axis,) * self.dim + self.patch_shape + (self.channels,)
        )
        # A different column of the same scan: shift by 1..columns-1.
        shift = tf.random.stateless_uniform(
            [self.num_columns], negative_seed, minval=1, maxval=self.num_columns, dtype=tf.int32
        )
        negatives = (tf.range(self.num_columns, dtype=tf.int32) + shift) % self.num_columns
        return inputs, negatives

    def _augment_cells(self, cells, seed):
        """Per patch: the old code's flips (`PATCH_FLIP_AXES`), then a random crop padded
        back (zeros, centred)."""
        crop = [max(1, int(s * PATCH_CROP_FRACTION[self.dim])) for s in self.patch_shape]
        pads = [
            ((s - c) // 2, s - c - (s - c) // 2)
            for s, c in zip(self.patch_shape, crop, strict=True)
        ]
        seeds = tf.random.experimental.stateless_split(seed, self.cells_per_axis**self.dim)

        flip_axes = PATCH_FLIP_AXES[self.dim]

        def one(args):
            patch, patch_seed = args
            flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(patch_seed, 2))
            flips = tf.random.stateless_uniform([len(flip_axes)], flip_seed) < 0.5
            for i, axis in enumerate(flip_axes):
                patch = tf.cond(flips[i], lambda p=patch, a=axis: tf.reverse(p, [a]),
                                lambda p=patch: p)
            patch = patch_ops.random_crop(patch, crop, crop_seed)
            return tf.pad(patch, [*pads, (0, 0)])

        return tf.map_fn(one, (cells, seeds), fn_output_signature=tf.float32)

    # --- network ---------------------------------------------------------------------------

    def call(self, inputs, training=None):
        batch = tf.shape(inputs)[0]
        cells = tf.reshape(inputs, (-1, *self.patch_shape, self.channels))
        features = self.encoder(cells, training=training)
        codes = self.code_layer(self.pool(features))
        codes = tf.reshape(codes, (batch, -1, self.code_size))  # (batch, cells, code)

        sequences = tf.gather(codes, self.context_cells, axis=1)  # (batch, columns, steps, code)
        sequences = tf.reshape(sequences, (-1, self.context_steps, self.code_size))
        context = self.context_network(sequences, training=training)  # (batch * columns, units)
        predictions = tf.stack([w(context) for w in self.predictors], axis=1)
        predictions = tf.reshape(
            predictions, (batch, self.num_columns, self.predict_steps, self.code_size)
        )
        targets = tf.gather(codes, self.target_cells, axis=1)  # (batch, columns, k, code)
        if self.loss_kind == "info_nce" and self.similarity == "cosine":
            predictions = tf.math.l2_normalize(predictions, axis=-1, epsilon=1e-12)
            targets = tf.math.l2_normalize(targets, axis=-1, epsilon=1e-12)
        return {"predictions": predictions, "targets": targets}

    def loss_and_accuracy(self, target, outputs):
        predictions, targets = outputs["predictions"], outputs["targets"]
        if self.loss_kind == "binary":
            negatives = tf.gather(targets, tf.cast(target, tf.int32), axis=1, batch_dims=1)
            return (
                losses.binary_cpc_loss(predictions, targets, negatives),
                losses.binary_cpc_accuracy(predictions, targets, negatives),
            )

        def by_step(x):  # (batch, columns, k, code) -> (k, batch * columns, code)
            return tf.transpose(tf.reshape(x, (-1, self.predict_steps, self.code_size)), (1, 0, 2))

        # Candidates: the targets of every replica (the global batch; a no-op on one
        # device); this replica's rows start at `offset` volumes in.
        targets, offset = replica_ops.gather_replicas(targets)
        predictions, targets = by_step(predictions), by_step(targets)
        if targets.shape[1] is not None:
            self._num_candidates = int(targets.shape[1])
        elif predictions.shape[1] is not None:  # equal shares (the pipeline drops remainders)
            self._num_candidates = int(predictions.shape[1]) * replica_ops.replicas_in_sync()
        first = offset * self.num_columns
        return (
            losses.info_nce_loss(
                predictions, targets, temperature=self.temperature, offset=first
            ),
            losses.info_nce_accuracy(predictions, targets, offset=first),
        )

    @property
    def chance_accuracy(self):
        """0.5 for `loss="binary"`; for InfoNCE `1 / candidates`.

        The InfoNCE candidates are the columns of every volume of the global
        batch, so chance depends on the batch size: it is taken from the last
        batch whose loss was computed with a static batch size (the pipeline's
        `drop_remainder=True` batches); before that, a one-volume batch
        (`1 / columns`) is assumed.
        """
        if self.loss_kind == "binary":
            return 0.5
        return 1.0 / self._num_candidates

    def get_config(self):
        return {
            **super().get_config(),
            "grid": self.grid,
            "overlap": self.overlap,
            "augment": self.augment,
            "code_size": self.code_size,
            "context_units": self.context_units,
            "loss": self.loss_kind,
            "similarity": self.similarity,
            "temperature": self.temperature,
        }

    @classmethod
    def from_config(cls, config):
        # Configs saved before `similarity` existed scored InfoNCE with plain dot products.
        return super().from_config({"similarity": "dot", **config})
