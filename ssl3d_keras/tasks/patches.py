"""Shared pieces of the patch tasks (jigsaw, relative patch location): patch size and encoding."""

import math

import keras

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.ops.patches import grid_patch_size


def patch_shape_for(task, grid, jitter):
    """Spatial shape of one grid patch of `task`'s volumes, checked against its encoder.

    Args:
        task: a `ProxyTask` (its `volume_shape` and `encoder` are used).
        grid: int, cells per axis.
        jitter: int, voxels of random offset per patch and axis.

    Returns:
        tuple of `dim` ints, the patch's spatial shape.

    Raises:
        ConfigError: the patch would be empty or smaller than the encoder's
            minimum input size.
    """
    if int(grid) < 2:
        raise ConfigError("grid", f"expected at least 2 cells per axis. Received: grid={grid}")
    if int(jitter) < 0:
        raise ConfigError("jitter", f"expected an int >= 0. Received: jitter={jitter}")
    try:
        patch = grid_patch_size(task.volume_shape[:-1], int(grid), int(jitter))
    except ValueError as e:
        raise ConfigError("input_shape", f"{e}; input_shape={task.volume_shape}") from None
    min_size = getattr(task.encoder, "min_input_size", None)
    if min_size is not None and min(patch) < min_size:
        raise ConfigError(
            "input_shape",
            f"patches of {patch} (cells of side size // {grid}, minus jitter {jitter}) are "
            f"smaller than the encoder's minimum input size {min_size}; use a larger volume, "
            f"a smaller grid or a shallower encoder. Received: input_shape={task.volume_shape}",
        )
    return patch


def encode_patches(encoder, patches, training=None):
    """Run one shared ("siamese") encoder over every patch; concatenate the features.

    Args:
        encoder: a `keras.Model` mapping `(batch, *patch, C)` to features.
        patches: tensor `(batch, N, *patch, C)` with static `N` and patch shape.
        training: bool.

    Returns:
        tensor `(batch, N * F)`, the flattened features of patch 0, 1, ... in order.
    """
    n = patches.shape[1]
    # One encoder pass over (batch * N) patches, so every patch shares the weights.
    features = encoder(keras.ops.reshape(patches, (-1, *patches.shape[2:])), training=training)
    size = math.prod(features.shape[1:])
    return keras.ops.reshape(features, (-1, n * size))
