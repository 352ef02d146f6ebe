"""Rotations of a volume by multiples of 90 degrees, as fixed class tables.

A rotation is stored as an axis permutation followed by flips, so it applies
as `tf.reverse(tf.transpose(volume, axes_perm), flips)`: exact, no
interpolation, and graph-safe.

Paper table (`kind="paper"`), 3D, 10 classes, never reorder them (trained
rotation heads depend on it):

| class | rotation                          |
|-------|-----------------------------------|
| 0     | identity                          |
| 1-3   | `np.rot90(v, k=1..3, axes=(1, 2))` (about axis 0) |
| 4-6   | `np.rot90(v, k=1..3, axes=(0, 2))` (about axis 1) |
| 7-9   | `np.rot90(v, k=1..3, axes=(0, 1))` (about axis 2) |

2D: 4 classes, `np.rot90(v, k=0..3, axes=(0, 1))`.
`kind="cube24"` (3D) is the full rotation group of the cube: the 10 paper
classes first, then the 14 compound rotations in a fixed sorted order.
"""

import itertools
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from ssl3d_keras.errors import ConfigError

KINDS = ("paper", "cube24")


class Rotation(NamedTuple):
    """A 90-degree rotation: `out = reverse(transpose(volume, axes_perm), flips)`.

    Attributes:
        name: str, e.g. `"rot90(1,2)k1"`.
        axes_perm: tuple, permutation of the spatial axes.
        flips: tuple, spatial axes reversed after the permutation.
    """

    name: str
    axes_perm: tuple
    flips: tuple


def _rot90(dim, k, plane):
    """The `Rotation` equal to `np.rot90(v, k, axes=plane)`."""
    a, b = plane
    swap = list(range(dim))
    swap[a], swap[b] = b, a
    identity = tuple(range(dim))
    name = f"rot90({a},{b})k{k}"
    if k == 1:  # np.rot90: transpose(flip(v, b)) == flip(transpose(v), a)
        return Rotation(name, tuple(swap), (a,))
    if k == 2:
        return Rotation(name, identity, (a, b))
    return Rotation(name, tuple(swap), (b,))


def signed_permutation_matrix(rotation):
    """Integer matrix `M` with `out[y] = volume[M @ y]` in centred voxel coordinates."""
    dim = len(rotation.axes_perm)
    matrix = np.zeros((dim, dim), np.int64)
    for k, axis in enumerate(rotation.axes_perm):
        matrix[axis, k] = -1 if k in rotation.flips else 1
    return matrix


def _paper_table(dim):
    identity = Rotation("identity", tuple(range(dim)), ())
    if dim == 2:
        return (identity, *(_rot90(2, k, (0, 1)) for k in (1, 2, 3)))
    return (
        identity,
        *(_rot90(3, k, plane) for plane in ((1, 2), (0, 2), (0, 1)) for k in (1, 2, 3)),
    )


def _cube24_table():
    paper = _paper_table(3)
    known = {signed_permutation_matrix(r).tobytes() for r in paper}
    extra = []
    for perm in itertools.permutations(range(3)):
        for n_flips in range(4):
            for flips in itertools.combinations(range(3), n_flips):
                rotation = Rotation(f"perm{perm}flip{flips}", perm, flips)
                matrix = signed_permutation_matrix(rotation)
                if round(np.linalg.det(matrix)) == 1 and matrix.tobytes() not in known:
                    known.add(matrix.tobytes())
                    extra.append(rotation)
    return paper + tuple(extra)


def rotation_table(dim, kind="paper"):
    """The fixed class-to-rotation table.

    Args:
        dim: int, 2 or 3.
        kind: `"paper"` (3D: 10 classes, 2D: 4) or `"cube24"` (3D: the 24
            rotations of the cube; 2D: the same 4 as `"paper"`).

    Returns:
        tuple of `Rotation`, indexed by class.
    """
    if dim not in (2, 3):
        raise ConfigError("dim", f"expected 2 or 3. Received: dim={dim!r}")
    if kind not in KINDS:
        raise ConfigError("rotations", f"expected one of {KINDS}. Received: {kind!r}")
    if kind == "cube24" and dim == 3:
        return _cube24_table()
    return _paper_table(dim)


def _apply(volume, rotation):
    rank = volume.shape.rank
    dim = len(rotation.axes_perm)
    lead = rank - 1 - dim  # leading (e.g. batch) axes before the spatial ones
    perm = [*range(lead), *(lead + a for a in rotation.axes_perm), rank - 1]
    out = tf.transpose(volume, perm)
    if rotation.flips:
        out = tf.reverse(out, [lead + a for a in rotation.flips])
    return out


def rot90(volume, k, axes):
    """`np.rot90(volume, k, axes)` for a static `k` (any rank, graph-safe).

    Args:
        volume: tensor.
        k: int, number of quarter turns (any int; taken modulo 4).
        axes: pair of distinct axes of the rotation plane.
    """
    volume = tf.convert_to_tensor(volume)
    rank = volume.shape.rank
    k = int(k) % 4
    if k == 0:
        return volume
    rotation = _rot90(rank, k, tuple(a % rank for a in axes))
    out = tf.transpose(volume, rotation.axes_perm)
    return tf.reverse(out, list(rotation.flips))


def rotate(volume, index, table):
    """Rotate a volume by the rotation `table[index]`.

    Args:
        volume: tensor `(*spatial, C)`, optionally with leading axes
            (e.g. `(batch, D, H, W, C)`); the spatial axes are the `dim`
            axes just before the channel axis.
        index: int or scalar int tensor, the class.
        table: tuple of `Rotation` from `rotation_table`.

    Returns:
        The rotated tensor. Its static shape is kept when every rotation of
        the table keeps it (cubic volumes); otherwise axes that may be swapped
        become unknown in graph mode.
    """
    volume = tf.convert_to_tensor(volume)
    dim = len(table[0].axes_perm)
    if volume.shape.rank is None or volume.shape.rank < dim + 1:
        raise ValueError(
            f"rotate expects a tensor (..., *spatial, C) with {dim} spatial axes. "
            f"Received: shape={volume.shape}"
        )
    if isinstance(index, (int, np.integer)):
        return _apply(volume, table[int(index)])
    index = tf.cast(tf.convert_to_tensor(index), tf.int32)
    branches = [lambda r=r: _apply(volume, r) for r in table]
    return tf.switch_case(index, branches)
