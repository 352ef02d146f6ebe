"""Rotation tables and rotate(), checked against np.rot90 and group properties."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.ops.rotations import rotate, rotation_table, signed_permutation_matrix

# The paper's class order, written independently of the code: (k, plane) per class.
PAPER_3D = [(0, (1, 2))] + [(k, p) for p in ((1, 2), (0, 2), (0, 1)) for k in (1, 2, 3)]


@pytest.fixture
def volume(rng):
    return rng.normal(size=(6, 6, 6, 2)).astype(np.float32)  # no symmetry


def test_paper_3d_classes_equal_np_rot90(volume):
    table = rotation_table(3)
    assert len(table) == 10
    for index, (k, plane) in enumerate(PAPER_3D):
        expected = np.rot90(volume, k, axes=plane)
        np.testing.assert_array_equal(rotate(volume, index, table), expected)
        np.testing.assert_array_equal(rotate(volume, tf.constant(index), table), expected)


def test_paper_2d_classes(rng):
    image = rng.normal(size=(5, 5, 3)).astype(np.float32)
    table = rotation_table(2)
    assert len(table) == 4
    for k in range(4):
        np.testing.assert_array_equal(
            rotate(image, tf.constant(k), table), np.rot90(image, k, axes=(0, 1))
        )


def test_all_distinct_and_proper(volume):
    for kind, size in (("paper", 10), ("cube24", 24)):
        table = rotation_table(3, kind)
        outputs = [rotate(volume, i, table).numpy().tobytes() for i in range(len(table))]
        assert len(set(outputs)) == size
        for rotation in table:
            assert round(np.linalg.det(signed_permutation_matrix(rotation))) == 1


def test_matrix_describes_the_op(volume):
    """out[y] = volume[M y] in centred coordinates, checked voxel by voxel."""
    n = volume.shape[0]
    centre = (n - 1) / 2
    for rotation in rotation_table(3, "cube24"):
        out = rotate(volume, 0, (rotation,)).numpy()
        matrix = signed_permutation_matrix(rotation)
        for y in itertools.product(range(n), repeat=3):
            x = matrix @ (np.array(y) - centre) + centre
            np.testing.assert_array_equal(out[y], volume[tuple(np.rint(x).astype(int))])


def test_cube24_is_the_rotation_group(volume):
    table = rotation_table(3, "cube24")
    assert table[:10] == rotation_table(3)  # paper classes first, same order
    matrices = [signed_permutation_matrix(r) for r in table]
    keys = {m.tobytes() for m in matrices}
    assert len(keys) == 24
    for a, b in itertools.product(matrices, repeat=2):
        assert (a @ b).tobytes() in keys  # closed under composition
    # Composition of the tensors agrees with the matrix product.
    outputs = {rotate(volume, i, table).numpy().tobytes() for i in range(24)}
    for i, j in [(1, 4), (5, 9), (13, 20)]:
        twice = rotate(rotate(volume, i, table), j, table).numpy().tobytes()
        assert twice in outputs


def test_graph_mode_and_tf_data(volume):
    table = rotation_table(3)
    fn = tf.function(lambda v, i: rotate(v, i, table))
    for index in (0, 5, 9):
        np.testing.assert_array_equal(fn(volume, tf.constant(index)), rotate(volume, index, table))
    ds = tf.data.Dataset.range(10).map(lambda i: rotate(tf.constant(volume), i, table))
    assert ds.element_spec.shape == (6, 6, 6, 2)
    for index, out in enumerate(ds):
        k, plane = PAPER_3D[index]
        np.testing.assert_array_equal(out, np.rot90(volume, k, axes=plane))


def test_leading_batch_axis(rng):
    batch = rng.normal(size=(2, 4, 4, 4, 1)).astype(np.float32)
    table = rotation_table(3)
    np.testing.assert_array_equal(rotate(batch, 4, table), np.rot90(batch, 1, axes=(1, 3)))


def test_bad_arguments():
    with pytest.raises(ConfigError):
        rotation_table(3, "octahedral")
    with pytest.raises(ConfigError):
        rotation_table(4)
    with pytest.raises(ValueError, match="spatial axes"):
        rotate(np.zeros((4, 4), np.float32), 0, rotation_table(3))
