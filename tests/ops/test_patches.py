"""Grid patches and crops, recomputed in numpy."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.ops.patches import center_crop, grid_patch_size, grid_patches, random_crop


def arange_volume(shape):
    """Every voxel holds its own flat index, so a crop reveals where it was cut."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def offset_of(volume, patch):
    """The start of `patch` inside `volume` (values are unique)."""
    return np.array(np.unravel_index(int(patch[(0,) * (patch.ndim - 1)][0]), volume.shape)[:-1])


def test_grid_patch_size_paper_numbers():
    assert grid_patch_size((128, 128, 128), 3, 3) == (39, 39, 39)
    assert grid_patch_size((64, 48), (4, 2), 0) == (16, 24)
    with pytest.raises(ValueError, match="leaves no patch"):
        grid_patch_size((8, 8, 8), 3, 2)


@pytest.mark.parametrize("shape,grid,jitter", [((14, 13, 15, 2), 3, 2), ((11, 16, 1), 2, 3)])
def test_grid_patches_eval_is_centre_cut(shape, grid, jitter):
    volume = arange_volume(shape)
    dim = len(shape) - 1
    out = grid_patches(volume, grid, jitter, tf.constant([1, 2]), training=False).numpy()
    cell = [s // grid for s in shape[:-1]]
    patch = [c - jitter for c in cell]
    assert out.shape == (grid**dim, *patch, shape[-1])
    for n, index in enumerate(itertools.product(range(grid), repeat=dim)):  # raster order
        start = [i * c + jitter // 2 for i, c in zip(index, cell, strict=True)]
        expected = volume[tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))]
        np.testing.assert_array_equal(out[n], expected)


def test_grid_patches_training_jitter():
    shape, grid, jitter = (15, 15, 15, 1), 3, 2
    volume = arange_volume(shape)
    seen = set()
    for seed in range(6):
        out = grid_patches(volume, grid, jitter, tf.constant([seed, 7]), training=True).numpy()
        for n, index in enumerate(itertools.product(range(grid), repeat=3)):
            start = offset_of(volume, out[n])
            offset = start - np.array(index) * 5
            assert ((0 <= offset) & (offset <= jitter)).all()
            seen.update(int(o) for o in offset)
            expected = volume[tuple(slice(s, s + 3) for s in start)]
            np.testing.assert_array_equal(out[n], expected)
    assert seen == {0, 1, 2}  # every offset in [0, jitter] occurs
    a = grid_patches(volume, grid, jitter, tf.constant([3, 3]), training=True)
    b = grid_patches(volume, grid, jitter, tf.constant([3, 3]), training=True)
    c = grid_patches(volume, grid, jitter, tf.constant([4, 3]), training=True)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_crops():
    volume = arange_volume((9, 10, 7, 2))
    out = center_crop(volume, (4, 5, 7)).numpy()
    np.testing.assert_array_equal(out, volume[2:6, 2:7, 0:7])
    starts = set()
    for seed in range(20):
        out = random_crop(volume, 5, tf.constant([seed, 0])).numpy()
        start = offset_of(volume, out)
        assert (start <= np.array([4, 5, 2])).all()
        np.testing.assert_array_equal(out, volume[tuple(slice(s, s + 5) for s in start)])
        starts.add(tuple(start))
    assert len(starts) > 10
    with pytest.raises(ValueError, match="does not fit"):
        center_crop(volume, (10, 5, 5))


def test_graph_mode_tf_data_and_dynamic_shapes():
    volume = arange_volume((12, 12, 12, 1))
    ds = tf.data.Dataset.range(3).map(
        lambda i: (
            grid_patches(
                tf.constant(volume), 2, 2, tf.stack([tf.cast(i, tf.int32), 0]), training=True
            ),
            random_crop(tf.constant(volume), 8, tf.stack([tf.cast(i, tf.int32), 1])),
        )
    )
    assert ds.element_spec[0].shape == (8, 4, 4, 4, 1)
    assert ds.element_spec[1].shape == (8, 8, 8, 1)
    for i, (patches, crop) in enumerate(ds):
        np.testing.assert_array_equal(
            patches, grid_patches(volume, 2, 2, tf.constant([i, 0]), True)
        )
        np.testing.assert_array_equal(crop, random_crop(volume, 8, tf.constant([i, 1])))
    dynamic = tf.function(
        lambda v: center_crop(v, (4, 4, 4)), input_signature=[tf.TensorSpec((None, None, None, 1))]
    )
    np.testing.assert_array_equal(dynamic(volume), volume[4:8, 4:8, 4:8])
    small = tf.function(
        lambda v: random_crop(v, 4, tf.constant([0, 0])),
        input_signature=[tf.TensorSpec((None, None, None, 1))],
    )
    with pytest.raises(tf.errors.InvalidArgumentError):
        small(np.zeros((3, 8, 8, 1), np.float32))
