"""Augmentations: numpy/scipy references, determinism, graph safety."""

import itertools

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from ssl3d_keras.ops.augment import (
    adjust_brightness_contrast,
    exemplar_augment,
    exemplar_augment_2d,
    fundus_augment,
    random_brightness_contrast,
    random_flip,
    random_quarter_turn,
    random_rot90_or_angle,
    random_scale_shift,
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


# --- the old code's 2D path ----------------------------------------------------------------


@pytest.fixture
def image(rng):
    return rng.normal(size=(6, 6, 3)).astype(np.float32)


def dihedral(image):
    """The 16 (quarter turn, vertical flip, horizontal flip) results of the old 2D chain."""
    out = {}
    for k, vertical, horizontal in itertools.product(range(4), (0, 1), (0, 1)):
        x = np.rot90(image, k)
        x = x[::-1] if vertical else x
        out[(k, vertical, horizontal)] = x[:, ::-1] if horizontal else x
    return out


def scale_and_shift(x, y):
    """Least-squares `a`, `b` with `y = a * x + b`, and the largest residual."""
    design = np.stack([x.ravel(), np.ones(x.size)], axis=1).astype(np.float64)
    (a, b), *_ = np.linalg.lstsq(design, y.ravel().astype(np.float64), rcond=None)
    return a, b, np.abs(a * x + b - y).max()


def test_random_quarter_turn_is_np_rot90(image):
    seen = set()
    for seed in seeds(40):
        out = random_quarter_turn(image, seed).numpy()
        ks = [k for k in range(4) if np.array_equal(out, np.rot90(image, k))]
        assert len(ks) == 1
        seen.add(ks[0])
    assert seen == {0, 1, 2, 3}
    wide = image[:4]  # (4, 6, 3): a quarter turn would change the shape
    outs = [random_quarter_turn(wide, seed).numpy() for seed in seeds(20)]
    assert all(any(np.array_equal(o, np.rot90(wide, k)) for k in (0, 2)) for o in outs)
    with pytest.raises(ValueError):
        random_quarter_turn(np.zeros((4, 4, 4, 1), np.float32), seeds(1)[0])


def test_random_scale_shift_is_albumentations_brightness_contrast(image):
    scales, shifts = [], []
    for seed in seeds(30):
        a, b, residual = scale_and_shift(image, random_scale_shift(image, seed).numpy())
        assert residual < 1e-5
        scales.append(a)
        shifts.append(b)
    assert 0.8 - 1e-6 <= min(scales) < 0.95 and 1.05 < max(scales) <= 1.2 + 1e-6
    assert -0.2 - 1e-6 <= min(shifts) < -0.05 and 0.05 < max(shifts) <= 0.2 + 1e-6
    np.testing.assert_array_equal(
        random_scale_shift(image, seeds(1)[0], contrast=0.0, brightness=0.0), image
    )


def test_exemplar_augment_2d_is_a_dihedral_map_then_scale_and_shift(image):
    candidates = dihedral(image)
    seen = set()
    for seed in seeds(40):
        out = exemplar_augment_2d(image, seed).numpy()
        assert out.shape == image.shape
        fits = [key for key, ref in candidates.items() if scale_and_shift(ref, out)[2] < 1e-4]
        assert fits, "not a quarter turn and flips of the image, scaled and shifted"
        seen.add(candidates[fits[0]].tobytes())
    assert len(seen) >= 6  # 8 distinct dihedral images; 40 draws see most of them


def test_zoom_is_identity_at_factor_one_with_either_fill(image):
    for fill in (None, 0.0):
        np.testing.assert_allclose(zoom(image, [1.0, 1.0], fill_value=fill), image, atol=1e-6)


def test_zoom_constant_fill_hand_case():
    row = np.arange(5, dtype=np.float32).reshape(1, 5, 1) + 1.0
    # factor 0.5 about c = 2 samples x at 2 + 2 (i - 2) = -2, 0, 2, 4, 6.
    out = zoom(row, [1.0, 0.5], fill_value=0.0).numpy().ravel()
    np.testing.assert_array_equal(out, [0.0, 1.0, 3.0, 5.0, 0.0])
    edge = zoom(row, [1.0, 0.5]).numpy().ravel()
    np.testing.assert_array_equal(edge, [1.0, 1.0, 3.0, 5.0, 5.0])


def test_zoom_constant_fill_matches_scipy(rng):
    image = rng.normal(size=(9, 11, 2)).astype(np.float32)
    factors = np.array([0.87, 1.13], np.float32)
    centre = (np.array(image.shape[:2]) - 1) / 2
    ref = scipy.ndimage.affine_transform(
        image, np.r_[1 / factors, 1.0], offset=np.r_[centre - centre / factors, 0.0],
        order=1, mode="constant", cval=0.0,
    )
    np.testing.assert_allclose(zoom(image, factors, fill_value=0.0), ref, atol=1e-4)


def test_fundus_augment_is_keras_zoom_then_flips(rng):
    image = rng.uniform(size=(12, 12, 3)).astype(np.float32)
    flips = [image, image[::-1], image[:, ::-1], image[::-1, ::-1]]
    seen = set()
    for seed in seeds(20):
        # zoom_range (1, 1): no zoom, so the output is exactly one of the four flips.
        out = fundus_augment(image, seed, zoom_range=(1.0, 1.0)).numpy()
        matches = [i for i, ref in enumerate(flips) if np.array_equal(out, ref)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) >= 3
    # A Keras factor of 1.15 on both axes zooms out: the image shrinks about the
    # centre inside a zero border (Keras samples at c + (i - c) * 1.15).
    out = fundus_augment(image, seeds(1)[0], zoom_range=(1.15, 1.15)).numpy()
    centre = (np.array(image.shape[:2]) - 1) / 2
    shrunk = scipy.ndimage.affine_transform(
        image, [1.15, 1.15, 1.0], offset=np.r_[centre - centre * 1.15, 0.0], order=1,
        mode="constant", cval=0.0,
    )
    shrunk_flips = [shrunk, shrunk[::-1], shrunk[:, ::-1], shrunk[::-1, ::-1]]
    assert any(np.allclose(out, ref, atol=1e-4) for ref in shrunk_flips)
    assert (out[0] == 0).all() and (out[:, -1] == 0).all()
    zoomed = [fundus_augment(image, seed).numpy() for seed in seeds(5)]
    assert all(z.shape == image.shape for z in zoomed)
    assert len({z.tobytes() for z in zoomed}) == 5


@pytest.mark.parametrize("op", [random_quarter_turn, random_scale_shift, exemplar_augment_2d,
                                fundus_augment])
def test_2d_ops_are_seeded_and_graph_safe(op, image):
    eager = [op(image, seed).numpy() for seed in seeds(3)]
    np.testing.assert_array_equal(op(image, seeds(3)[1]), eager[1])
    assert len({e.tobytes() for e in eager}) > 1
    ds = tf.data.Dataset.range(3).map(
        lambda i: op(tf.constant(image), tf.stack([tf.cast(i, tf.int32), 17]))
    )
    assert ds.element_spec.shape == image.shape
    for i, out in enumerate(ds):
        np.testing.assert_allclose(out, eager[i], atol=1e-5)
