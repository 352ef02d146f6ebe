"""Patch sampling: a jittered grid of patches (jigsaw, RPL, CPC) and crops.

Volumes are `(*spatial, C)` with 2 or 3 spatial axes. Randomness comes from
stateless seeds (int32 tensors of shape `[2]`), so the same seed gives the
same patches inside `tf.data` or a `tf.function`.
"""

import itertools

import tensorflow as tf


def _as_tuple(value, dim, name):
    if isinstance(value, int):
        return (value,) * dim
    value = tuple(int(v) for v in value)
    if len(value) != dim:
        raise ValueError(
            f"{name} needs one value per spatial axis ({dim}). Received: {name}={value}"
        )
    return value


def _spatial_shape(volume, op):
    shape = volume.shape
    if shape.rank is None or shape.rank < 2:
        raise ValueError(f"{op} expects a volume (*spatial, C). Received: shape={shape}")
    return shape[:-1]


def grid_patch_size(spatial, grid, jitter):
    """Patch size of a jittered grid: `cell - jitter` with `cell = size // grid`.

    Args:
        spatial: tuple of ints, the spatial size of the volume.
        grid: int or tuple, cells per axis.
        jitter: int, margin left in each cell for the random offset.

    Returns:
        tuple of ints, the patch size per axis (e.g. 128^3, grid 3, jitter 3:
        cell 42, patch 39).

    Raises:
        ValueError: a patch would be empty.
    """
    spatial = tuple(int(s) for s in spatial)
    grid = _as_tuple(grid, len(spatial), "grid")
    patch = tuple(s // g - jitter for s, g in zip(spatial, grid, strict=True))
    if jitter < 0 or min(grid) < 1 or min(patch) < 1:
        raise ValueError(
            f"a grid of {grid} cells with jitter {jitter} leaves no patch in a volume of "
            f"spatial size {spatial}. Received: grid={grid}, jitter={jitter}"
        )
    return patch


def grid_patches(volume, grid, jitter, seed, training=True):
    """Cut the volume into a grid of patches, each at a jittered offset in its cell.

    Cells are `size // grid` voxels wide (the remainder at the far end is
    unused); a patch is `cell - jitter` wide. In training each patch starts at
    a random offset in `[0, jitter]` inside its cell, independently per patch
    and per axis; in evaluation every patch is centre-cut (offset
    `jitter // 2`) so the example is deterministic.

    Args:
        volume: tensor `(*spatial, C)` with a static spatial shape.
        grid: int or tuple of ints, cells per axis.
        jitter: int >= 0.
        seed: int32 tensor of shape `[2]` (ignored in evaluation).
        training: bool.

    Returns:
        Tensor `(n_cells, *patch, C)`, cells in raster (C) order over the grid,
        `n_cells = prod(grid)` (`grid**dim` for an int grid).
    """
    volume = tf.convert_to_tensor(volume)
    spatial = _spatial_shape(volume, "grid_patches")
    if not spatial.is_fully_defined():
        raise ValueError(
            f"grid_patches needs a static spatial shape. Received: shape={volume.shape}"
        )
    dim = len(spatial)
    grid = _as_tuple(grid, dim, "grid")
    patch = grid_patch_size(spatial, grid, jitter)
    cell = tuple(s // g for s, g in zip(spatial, grid, strict=True))
    cells = list(itertools.product(*(range(g) for g in grid)))
    origins = tf.constant(
        [[i * c for i, c in zip(index, cell, strict=True)] for index in cells], tf.int32
    )
    if training:
        offsets = tf.random.stateless_uniform(
            (len(cells), dim), seed, minval=0, maxval=jitter + 1, dtype=tf.int32
        )
    else:
        offsets = tf.fill((len(cells), dim), jitter // 2)
    starts = origins + offsets
    patches = [_crop(volume, starts[i], patch) for i in range(len(cells))]
    return tf.stack(patches)


def _crop(volume, starts, size):
    out = tf.slice(volume, tf.concat([starts, [0]], 0), [*size, -1])
    return tf.ensure_shape(out, [*size, volume.shape[-1]])


def _crop_limits(volume, size, op):
    spatial = _spatial_shape(volume, op)
    size = _as_tuple(size, len(spatial), "size")
    for s, c in zip(spatial, size, strict=True):
        if c < 1 or (s is not None and c > s):
            raise ValueError(
                f"{op}: crop size {size} does not fit in spatial size {tuple(spatial)}. "
                f"Received: size={size}"
            )
    limits = tf.shape(volume)[:-1] - tf.constant(size, tf.int32)
    tf.debugging.assert_non_negative(limits, message=f"{op}: crop size {size} exceeds the volume")
    return size, limits


def random_crop_start(spatial, size, seed):
    """Uniformly random start of a crop of `size` inside `spatial` (the one crop draw).

    `random_crop` and the pipeline's image/label crop both draw their window
    here, so a crop of the same seed lands in the same place everywhere.

    Args:
        spatial: int32 tensor `[dim]`, the spatial shape (may be dynamic).
        size: int32 tensor or tuple `[dim]`, the crop size (<= `spatial`).
        seed: int32 tensor of shape `[2]`.

    Returns:
        int32 tensor `[dim]` of start indices in `[0, spatial - size]`.
    """
    limits = tf.convert_to_tensor(spatial, tf.int32) - tf.convert_to_tensor(size, tf.int32)
    # One uniform per axis, scaled to [0, limit]: valid for any limit, also dynamic ones.
    u = tf.random.stateless_uniform(tf.shape(limits), seed, dtype=tf.float32)
    return tf.minimum(tf.cast(u * tf.cast(limits + 1, tf.float32), tf.int32), limits)


def random_crop(volume, size, seed):
    """A crop of `size` at a uniformly random position.

    Args:
        volume: tensor `(*spatial, C)`; the spatial shape may be dynamic.
        size: int or tuple, crop size per spatial axis.
        seed: int32 tensor of shape `[2]`.

    Returns:
        Tensor `(*size, C)`.
    """
    volume = tf.convert_to_tensor(volume)
    size, _ = _crop_limits(volume, size, "random_crop")
    starts = random_crop_start(tf.shape(volume)[:-1], size, seed)
    return _crop(volume, starts, size)


def center_crop(volume, size):
    """The centre crop of `size` (start `(spatial - size) // 2` per axis).

    Args:
        volume: tensor `(*spatial, C)`.
        size: int or tuple, crop size per spatial axis.

    Returns:
        Tensor `(*size, C)`.
    """
    volume = tf.convert_to_tensor(volume)
    size, limits = _crop_limits(volume, size, "center_crop")
    return _crop(volume, limits // 2, size)
