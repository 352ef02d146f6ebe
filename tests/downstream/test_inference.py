"""Sliding-window inference, checked against whole-volume numpy/scipy references."""

import itertools
import math

import numpy as np
import pytest
import scipy.ndimage as ndi

from ssl3d_keras.downstream.inference import (
    gaussian_importance_map,
    slicewise_predict,
    sliding_window_predict,
    window_starts,
)
from ssl3d_keras.errors import ConfigError


def arange_volume(shape):
    """Every voxel holds a distinct value, so a misplaced window shows."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 1000.0


def identity(batch):
    return batch


def box_filter(batch):
    """A 3x3(x3) mean filter with zero padding, applied to each window on its own."""
    return np.stack(
        [ndi.uniform_filter(x, size=(3,) * (x.ndim - 1) + (1,), mode="constant") for x in batch]
    )


class Recorder:
    """A predict_fn that records the batch shapes it was called with."""

    def __init__(self, fn=identity):
        self.fn = fn
        self.shapes = []

    def __call__(self, batch):
        assert batch.dtype == np.float32
        self.shapes.append(batch.shape)
        return self.fn(batch)


def n_windows(spatial, window, overlap):
    return math.prod(
        len(window_starts(s, w, overlap)) for s, w in zip(spatial, window, strict=True)
    )


# --- window_starts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,window,overlap,expected",
    [
        (20, 8, 0.5, [0, 4, 8, 12]),
        (21, 8, 0.5, [0, 4, 8, 12, 13]),
        (10, 4, 0.0, [0, 4, 6]),
        (12, 4, 0.0, [0, 4, 8]),
        (10, 4, 0.75, [0, 1, 2, 3, 4, 5, 6]),
        (10, 3, 0.9, [0, 1, 2, 3, 4, 5, 6, 7]),  # step max(1, int(0.3)) = 1
        (17, 8, 0.25, [0, 6, 9]),
        (8, 8, 0.5, [0]),
        (5, 8, 0.0, [0]),
    ],
)
def test_window_starts_hand_computed(size, window, overlap, expected):
    assert window_starts(size, window, overlap) == expected


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.6, 0.9])
def test_window_starts_cover_the_axis(overlap):
    for size, window in itertools.product(range(1, 40), range(1, 17)):
        starts = window_starts(size, window, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + window] = True
        assert covered.all()
        assert starts == sorted(set(starts)) and starts[0] == 0
        if size > window:
            assert starts[-1] == size - window  # flush with the end, never past it
            step = max(1, int(window * (1 - overlap)))
            assert all(b - a == step for a, b in itertools.pairwise(starts[:-1]))


# --- importance map ------------------------------------------------------------------------


@pytest.mark.parametrize("window", [(9,), (8, 11), (6, 7, 10)])
def test_importance_map_shape_max_min_symmetry(window):
    weights = gaussian_importance_map(window)
    assert weights.shape == window and weights.dtype == np.float32
    assert weights.max() == pytest.approx(1.0)
    assert weights.min() > 0
    for axis in range(len(window)):
        np.testing.assert_allclose(weights, np.flip(weights, axis), rtol=1e-6)


def test_importance_map_is_the_gaussian():
    weights = gaussian_importance_map((9, 16), sigma_scale=0.125)
    z = np.exp(-0.5 * ((np.arange(9) - 4) / (9 / 8)) ** 2)
    y = np.exp(-0.5 * ((np.arange(16) - 7.5) / 2.0) ** 2)
    expected = np.outer(z, y)
    np.testing.assert_allclose(weights, expected / expected.max(), rtol=1e-5)
    assert weights[4, 7] == weights[4, 8] == weights.max()


def test_importance_map_replaces_zeros_by_smallest_positive():
    weights = gaussian_importance_map((32, 32), sigma_scale=0.01)  # tails underflow
    assert weights.max() == pytest.approx(1.0)
    positive = weights[weights > weights.min()]
    assert weights.min() > 0 and positive.size > 0
    assert (weights == weights.min()).sum() > weights.size // 2  # the former zeros


# --- sliding_window_predict ----------------------------------------------------------------


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize(
    "shape,window",
    [((19, 21, 17, 2), 8), ((13, 22, 18, 1), (6, 8, 10)), ((37, 29, 3), 16)],
)
def test_identity_model_returns_the_volume(shape, window, overlap, blend):
    volume = arange_volume(shape)
    out = sliding_window_predict(volume, identity, window=window, overlap=overlap, blend=blend)
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, volume, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_volume_smaller_than_window_is_padded_symmetrically(blend):
    volume = arange_volume((5, 7, 6, 2)) + 1.0
    model = Recorder()
    seen = []
    out = sliding_window_predict(
        volume,
        lambda b: seen.append(b.copy()) or model(b),
        window=8,
        divisible_by=8,
        blend=blend,
    )
    np.testing.assert_allclose(out, volume, rtol=1e-6)
    assert model.shapes == [(1, 8, 8, 8, 2)]
    # Pads (1, 2), (0, 1), (1, 1): the volume sits in the middle, zeros around it.
    np.testing.assert_array_equal(seen[0][0, 1:6, 0:7, 1:7], volume)
    assert seen[0][0].sum() == pytest.approx(volume.sum())


def test_axis_smaller_than_window_without_divisible_by_is_not_padded():
    volume = arange_volume((5, 20, 3))
    model = Recorder()
    out = sliding_window_predict(volume, model, window=8, overlap=0.5)
    np.testing.assert_allclose(out, volume, rtol=1e-6)
    assert {s[1:] for s in model.shapes} == {(5, 8, 3)}


def test_constant_model_gives_ones():
    volume = arange_volume((18, 11, 20, 2))
    out = sliding_window_predict(
        volume, lambda b: np.ones((*b.shape[:-1], 3)), window=(8, 8, 8), overlap=0.5
    )
    assert out.shape == (18, 11, 20, 3)
    np.testing.assert_allclose(out, 1.0, rtol=1e-6)


def _interior_mask(spatial, window, overlap):
    """Voxels whose 3x3x3 neighbourhood lies inside every window that covers them.

    A window's face on the volume border does not count: there the window's
    zero padding is the whole volume's zero padding too.
    """
    masks = []
    for size, w in zip(spatial, window, strict=True):
        good = np.ones(size, bool)
        for s in window_starts(size, w, overlap):
            if s > 0:
                good[s] = False
            if s + w < size:
                good[s + w - 1] = False
        masks.append(good)
    return np.ix_(*masks)


@pytest.mark.parametrize("overlap", [0.25, 0.5])
def test_box_filter_is_stitched_without_misplacement(overlap):
    """A translation-equivariant model on a coordinate ramp (slope 1 per voxel).

    Where no window border cuts the filter, the stitched output must equal the
    filter applied to the whole volume (a window misplaced by one voxel would
    be off by 1); near window borders the Gaussian map must hide most of the
    zero-padding error that a plain average shows.
    """
    spatial, window = (27, 22, 25), (12, 12, 12)
    ramp = np.stack(
        np.meshgrid(*[np.arange(s) - s / 2 for s in spatial], indexing="ij"), axis=-1
    ).astype(np.float32)  # (D, H, W, 3): channel a holds the centred coordinate on axis a
    reference = box_filter(ramp[None])[0]
    inner = (slice(1, -1),) * 3
    np.testing.assert_allclose(reference[inner], ramp[inner], atol=1e-5)  # filter keeps ramps

    errors = {}
    for blend in ("gaussian", "constant"):
        out = sliding_window_predict(ramp, box_filter, window=window, overlap=overlap, blend=blend)
        np.testing.assert_allclose(
            out[_interior_mask(spatial, window, overlap)],
            reference[_interior_mask(spatial, window, overlap)],
            atol=1e-4,
        )
        errors[blend] = np.abs(out - reference).max()
    assert errors["constant"] > 1.0  # the test sees seams ...
    assert errors["gaussian"] < 0.2 * errors["constant"]  # ... and the importance map hides them


def test_keras_conv_model_returning_tensors():
    import keras

    conv = keras.layers.Conv3D(1, 3, padding="same", use_bias=False)
    model = keras.Sequential([keras.Input((None, None, None, 1)), conv])
    conv.set_weights([np.full((3, 3, 3, 1, 1), 1 / 27, np.float32)])
    volume = np.random.default_rng(0).normal(size=(20, 18, 16, 1)).astype(np.float32)
    out = sliding_window_predict(volume, lambda b: model(b), window=16, overlap=0.5)  # tf tensors
    expected = sliding_window_predict(volume, box_filter, window=16, overlap=0.5)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_batching_is_invisible_and_call_count(rng):
    volume = rng.normal(size=(20, 17, 23, 2)).astype(np.float32)
    spatial, window, overlap = volume.shape[:-1], (8, 8, 8), 0.5
    total = n_windows(spatial, window, overlap)
    results, ticks = {}, {}
    for batch_size in (1, 7):
        model = Recorder(lambda b: np.tanh(box_filter(b)) * 2.0 + b**2)
        ticks[batch_size] = []
        results[batch_size] = sliding_window_predict(
            volume,
            model,
            window=window,
            overlap=overlap,
            batch_size=batch_size,
            progress=lambda done, n, bs=batch_size: ticks[bs].append((done, n)),
        )
        assert len(model.shapes) == math.ceil(total / batch_size)
        assert max(s[0] for s in model.shapes) == min(batch_size, total)
        assert sum(s[0] for s in model.shapes) == total
        assert ticks[batch_size][-1] == (total, total)
        assert len(ticks[batch_size]) == len(model.shapes)
    np.testing.assert_allclose(results[1], results[7], rtol=1e-6, atol=1e-6)


def test_divisible_by_shrinks_the_window_to_the_padded_volume():
    volume = arange_volume((20, 20, 20, 1))
    model = Recorder()
    out = sliding_window_predict(volume, model, window=32, divisible_by=8)
    assert model.shapes == [(1, 24, 24, 24, 1)]
    np.testing.assert_allclose(out, volume, rtol=1e-6)


def test_num_outputs_is_checked():
    volume = np.zeros((8, 8, 1), np.float32)
    out = sliding_window_predict(
        volume, lambda b: np.zeros((*b.shape[:-1], 4)), window=4, num_outputs=4
    )
    assert out.shape == (8, 8, 4)
    with pytest.raises(ConfigError, match="returned 4 channels, expected 3"):
        sliding_window_predict(
            volume, lambda b: np.zeros((*b.shape[:-1], 4)), window=4, num_outputs=3
        )


@pytest.mark.parametrize(
    "kwargs,volume_shape,match",
    [
        ({"window": 8, "overlap": 1.0}, (16, 16, 16, 1), r"overlap.*\[0, 1\).*overlap=1.0"),
        ({"window": 8, "overlap": -0.1}, (16, 16, 16, 1), r"Received: overlap=-0.1"),
        ({"window": 30, "divisible_by": 8}, (40, 40, 40, 1), r"divisible_by=8.*window=\(30,"),
        ({"window": 8}, (16, 16), r"rank 3 or 4.*shape=\(16, 16\)"),
        ({"window": 8}, (4, 16, 16, 16, 1), r"rank 3 or 4"),
        ({"window": (8, 8)}, (16, 16, 16, 1), r"3 positive ints.*window=\(8, 8\)"),
        ({"window": 8, "blend": "mean"}, (16, 16, 16, 1), r"blend='mean'"),
    ],
)
def test_config_errors_are_one_line(kwargs, volume_shape, match):
    with pytest.raises(ConfigError, match=match) as info:
        sliding_window_predict(np.zeros(volume_shape, np.float32), identity, **kwargs)
    assert "\n" not in str(info.value)


def test_model_changing_the_grid_is_an_error():
    with pytest.raises(ConfigError, match="predict_fn"):
        sliding_window_predict(np.zeros((16, 16, 1)), lambda b: b[:, ::2, ::2], window=8)


# --- slicewise_predict ---------------------------------------------------------------------


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
@pytest.mark.parametrize("window,divisible_by", [(None, 1), (None, 4), (8, 4)])
def test_slicewise_identity_returns_the_volume(slice_axis, window, divisible_by):
    volume = arange_volume((9, 13, 11, 2))
    model = Recorder()
    out = slicewise_predict(
        volume,
        model,
        slice_axis=slice_axis,
        batch_size=4,
        window=window,
        divisible_by=divisible_by,
    )
    np.testing.assert_allclose(out, volume, rtol=1e-6)
    plane = tuple(s for a, s in enumerate(volume.shape[:-1]) if a != slice_axis)
    for shape in model.shapes:
        assert len(shape) == 4 and shape[-1] == 2  # 2D batches (n, h, w, C)
        assert all(s % divisible_by == 0 for s in shape[1:3])
    if window is None:
        assert len(model.shapes) == math.ceil(volume.shape[slice_axis] / 4)
        assert model.shapes[0][1:3] == tuple(
            math.ceil(s / divisible_by) * divisible_by for s in plane
        )


def test_slicewise_uses_only_in_plane_context():
    """A 2D box filter per slice differs from a 3D one: check against scipy per slice."""
    volume = np.random.default_rng(1).normal(size=(6, 10, 12, 1)).astype(np.float32)
    out = slicewise_predict(volume, box_filter, slice_axis=1)
    expected = ndi.uniform_filter(volume, size=(3, 1, 3, 1), mode="constant")
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_slicewise_rejects_bad_input():
    with pytest.raises(ConfigError, match="slice_axis"):
        slicewise_predict(np.zeros((4, 4, 4, 1)), identity, slice_axis=3)
    with pytest.raises(ConfigError, match=r"rank 4.*shape=\(4, 4, 1\)"):
        slicewise_predict(np.zeros((4, 4, 1)), identity)
