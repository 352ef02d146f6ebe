"""Augmentations: numpy/scipy references, determinism, graph safety."""

import itertools

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from ssl3d_keras.ops.augment import (
    adjust_brightness_contrast,
    exemplar_augment,
    random_brightness_contrast,
    random_flip,
    random_rot90_or_angle,
    random_zoom,
    rotate_angle,
    zoom,
)
from ssl3d_keras.ops.rotations import rot90

RANDOM_OPS = [random_flip, random_rot90_or_angle, random_brightness_contrast, exemplar_augment]


@pytest.fixture
def volume(rng):
    return rng.normal(size=(8, 8, 8, 2)).astype(np.float32)


def seeds(n, offset=0):
    return [tf.constant([i + offset, 17], tf.int32) for i in range(n)]


def test_rot90_helper_matches_numpy(volume):
    for k, axes in itertools.product(range(-1, 5), [(0, 1), (1, 2), (2, 0)]):
        np.testing.assert_array_equal(rot90(volume, k, axes), np.rot90(volume, k, axes=axes))


def test_random_flip_is_one_of_the_numpy_flips(volume):
    flips = {}
    for n in range(4):
        for axes in itertools.combinations(range(3), n):
            flips[axes] = np.flip(volume, axes) if axes else volume
    seen = set()
    for seed in seeds(40):
        out = random_flip(volume, seed).numpy()
        matches = [axes for axes, ref in flips.items() if np.array_equal(out, ref)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) >= 6  # all 8 flip sets are reachable; 40 draws see most of them
    np.testing.assert_array_equal(random_flip(volume, seeds(1)[0], p=0.0), volume)
    np.testing.assert_array_equal(random_flip(volume, seeds(1)[0], p=1.0), volume[::-1, ::-1, ::-1])


def test_rotate_angle_quarter_turn_equals_rot90(volume):
    for axes in [(0, 1), (0, 2), (1, 2)]:
        out = rotate_angle(volume, np.pi / 2, axes)
        np.testing.assert_allclose(out, np.rot90(volume, 1, axes=axes), atol=1e-4)
        np.testing.assert_allclose(rotate_angle(volume, 0.0, axes), volume, atol=1e-6)
    image = volume[0]
    np.testing.assert_allclose(rotate_angle(image, np.pi, (0, 1)), np.rot90(image, 2), atol=1e-4)


def test_rotate_angle_bilinear_against_scipy(rng):
    """A 30-degree turn agrees with scipy's linear rotation inside the disc."""
    image = rng.normal(size=(15, 15, 1)).astype(np.float32)
    out = rotate_angle(image, np.deg2rad(30), (0, 1)).numpy()[..., 0]
    ref = scipy.ndimage.rotate(image[..., 0], 30, reshape=False, order=1, mode="nearest")
    yy, xx = np.mgrid[:15, :15] - 7
    inside = yy**2 + xx**2 <= 36
    np.testing.assert_allclose(out[inside], ref[inside], atol=1e-4)


def test_random_rot90_cases_equal_numpy(volume):
    planes = list(itertools.combinations(range(3), 2))
    references = []
    for ks in itertools.product(range(4), repeat=3):
        ref = volume
        for k, plane in zip(ks, planes, strict=True):
            ref = np.rot90(ref, k, axes=plane)
        references.append(ref)
    rotated = 0
    for seed in seeds(12):
        out = random_rot90_or_angle(volume, seed, p_angle=0.0).numpy()
        assert any(np.array_equal(out, ref) for ref in references)
        rotated += not np.array_equal(out, volume)
    assert rotated > 0
    # Arbitrary angles: shape kept, not a lattice rotation.
    out = random_rot90_or_angle(volume, seeds(1)[0], p=1.0, p_angle=1.0).numpy()
    assert out.shape == volume.shape
    assert not any(np.allclose(out, ref) for ref in references)


def test_non_square_plane_keeps_shape(rng):
    volume = rng.normal(size=(8, 6, 4, 1)).astype(np.float32)
    for seed in seeds(6):
        assert random_rot90_or_angle(volume, seed, p=1.0, p_angle=0.0).shape == volume.shape
    np.testing.assert_array_equal(
        random_rot90_or_angle(volume, seeds(1)[0], p=1.0, p_angle=0.0),
        np.rot90(np.rot90(np.rot90(volume, 2, (0, 1)), 2, (0, 2)), 2, (1, 2)),
    )


def test_brightness_contrast_algebra(volume):
    out = adjust_brightness_contrast(volume, 0.1, 1.3).numpy()
    mean = volume.mean(axis=(0, 1, 2), keepdims=True)
    np.testing.assert_allclose(out, (volume - mean) * 1.3 + mean + 0.1, rtol=1e-5, atol=1e-5)
    changed = 0
    for seed in seeds(20):
        out = random_brightness_contrast(volume, seed).numpy()
        # out = factor * (x - mean) + mean + delta: recover factor and delta per channel.
        centred_in = volume - volume.mean(axis=(0, 1, 2))
        centred_out = out - out.mean(axis=(0, 1, 2))
        factor = (centred_out * centred_in).sum((0, 1, 2)) / (centred_in**2).sum((0, 1, 2))
        delta = out.mean(axis=(0, 1, 2)) - volume.mean(axis=(0, 1, 2))
        np.testing.assert_allclose(centred_out, factor * centred_in, atol=1e-4)
        assert np.allclose(factor, factor[0]) and np.allclose(delta, delta[0], atol=1e-5)
        assert 0.5 - 1e-5 <= factor[0] <= 1.5 + 1e-5 and abs(delta[0]) <= 0.125 + 1e-5
        changed += not np.allclose(out, volume)
    assert changed > 0


def test_zoom_matches_scipy(volume):
    factors = np.array([1.2, 0.8, 1.05], np.float32)
    centre = (np.array(volume.shape[:3]) - 1) / 2
    ref = scipy.ndimage.affine_transform(
        volume,
        np.r_[1 / factors, 1.0],
        offset=np.r_[centre - centre / factors, 0.0],
        order=1,
        mode="nearest",
    )
    np.testing.assert_allclose(zoom(volume, factors), ref, atol=1e-4)
    np.testing.assert_allclose(zoom(volume, [1.0, 1.0, 1.0]), volume, atol=1e-6)


def test_random_zoom_probability(volume):
    outs = [random_zoom(volume, seed).numpy() for seed in seeds(40)]
    zoomed = sum(not np.array_equal(o, volume) for o in outs)
    assert 1 <= zoomed <= 20  # p = 0.15
    assert all(o.shape == volume.shape for o in outs)
    assert not np.array_equal(random_zoom(volume, seeds(1)[0], p=1.0), volume)


@pytest.mark.parametrize("op", [*RANDOM_OPS, random_zoom])
def test_shape_and_seed_determinism(op, volume):
    kwargs = {"p": 1.0} if op is random_zoom else {}
    a = op(volume, tf.constant([1, 2]), **kwargs)
    b = op(volume, tf.constant([1, 2]), **kwargs)
    assert a.shape == volume.shape
    np.testing.assert_array_equal(a, b)
    outs = [op(volume, seed, **kwargs).numpy().tobytes() for seed in seeds(6, offset=10)]
    assert len(set(outs)) > 1


def test_graph_mode_and_tf_data_2d_and_3d(volume):
    image = volume[0]
    for data in (volume, image):
        fn = tf.function(exemplar_augment)
        eager = [exemplar_augment(data, seed).numpy() for seed in seeds(3)]
        ds = tf.data.Dataset.range(3).map(
            lambda i, d=data: exemplar_augment(tf.constant(d), tf.stack([tf.cast(i, tf.int32), 17]))
        )
        assert ds.element_spec.shape == data.shape
        for i, out in enumerate(ds):
            np.testing.assert_allclose(out, eager[i], atol=1e-5)
            np.testing.assert_allclose(fn(data, seeds(3)[i]), eager[i], atol=1e-5)
