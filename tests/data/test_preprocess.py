"""Preprocessing against hand-computed small cases and numpy references."""

import numpy as np
import pytest

from ssl3d_keras.data import preprocess as preprocess_module
from ssl3d_keras.data.preprocess import (
    PreprocessConfig,
    foreground_box,
    normalize,
    pad_or_crop,
    padding_share,
    preprocess,
    resample,
    resize,
)
from ssl3d_keras.errors import ConfigError, DataError


def test_nearest_label_resampling_keeps_label_set(rng):
    label = rng.integers(0, 4, size=(4, 4, 4)).astype(np.int32)
    image = rng.normal(size=(4, 4, 4, 1)).astype(np.float32)
    up_img, up, spacing, _ = resample(image, label, (2.0, 2.0, 2.0), (1.0, 1.0, 1.0))
    assert up.shape == (8, 8, 8) and up_img.shape == (8, 8, 8, 1)
    assert set(np.unique(up)) == set(np.unique(label))
    # Upsampling by 2 with nearest: each voxel becomes a 2x2x2 block.
    np.testing.assert_array_equal(up, label.repeat(2, 0).repeat(2, 1).repeat(2, 2))
    _, down, spacing, _ = resample(image, label, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    assert down.shape == (2, 2, 2) and set(np.unique(down)) <= set(np.unique(label))
    assert spacing == (2.0, 2.0, 2.0)


def test_linear_resampling_hand_computed():
    # Two cells (0 and 10) of 2 mm -> four cells of 1 mm whose centres sit at old
    # coordinates -0.25, 0.25, 0.75, 1.25 (edges clamp): 0, 2.5, 7.5, 10.
    image = np.zeros((2, 1, 1, 1), np.float32)
    image[1] = 10.0
    out, _, spacing, affine = resample(image, None, (2.0, 1.0, 1.0), (1.0, 1.0, 1.0),
                                       affine=np.diag([2.0, 1.0, 1.0, 1.0]))
    np.testing.assert_allclose(out[:, 0, 0, 0], [0.0, 2.5, 7.5, 10.0], atol=1e-6)
    assert spacing == (1.0, 1.0, 1.0)
    # The new voxel j sits at world x = 2 * ((j + 0.5) * 0.5 - 0.5).
    for j in range(4):
        np.testing.assert_allclose((affine @ [j, 0, 0, 1])[0], 2 * ((j + 0.5) * 0.5 - 0.5))


def test_resampling_is_per_channel_and_records_reached_spacing(rng):
    image = np.stack([np.full((5, 5, 5), 3.0), np.full((5, 5, 5), -7.0)], -1).astype(np.float32)
    out, _, spacing, _ = resample(image, None, (1.0, 1.0, 1.0), (1.5, 1.5, 1.5))
    assert out.shape == (3, 3, 3, 2)  # round(5 / 1.5) = 3
    np.testing.assert_allclose(out[..., 0], 3.0)
    np.testing.assert_allclose(out[..., 1], -7.0)
    np.testing.assert_allclose(spacing, (5 / 3,) * 3)


def test_zscore_over_nonzero_foreground(rng):
    image = np.zeros((6, 6, 6, 2), np.float32)
    image[1:5, 1:5, 1:5] = rng.normal(50, 10, size=(4, 4, 4, 2))
    out, stats = normalize(image, PreprocessConfig(normalize="zscore"))
    fg = image[..., 0] != 0
    for c in range(2):
        np.testing.assert_allclose(out[..., c][fg].mean(), 0, atol=1e-5)
        np.testing.assert_allclose(out[..., c][fg].std(), 1, atol=1e-5)
        x = image[..., c][fg].astype(np.float64)
        assert stats[c]["mean"] == pytest.approx(x.mean())
    assert np.all(out[~fg] == 0)
    out_all, _ = normalize(image, PreprocessConfig(zscore_foreground="all"))
    np.testing.assert_allclose(out_all[..., 0].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(out_all[..., 0].std(), 1, atol=1e-5)


def test_minmax_ct_window_and_percentile(rng):
    image = np.array([-2000.0, -100.0, 40.0, 240.0, 3000.0], np.float32).reshape(5, 1, 1, 1)
    ct, _ = normalize(image, PreprocessConfig(normalize="ct", ct_window=(-100, 240)))
    np.testing.assert_allclose(ct.ravel(), [0.0, 0.0, 140 / 340, 1.0, 1.0], rtol=1e-6)
    mm, _ = normalize(image, PreprocessConfig(normalize="minmax"))
    np.testing.assert_allclose(mm.ravel(), (image.ravel() + 2000) / 5000, rtol=1e-6)
    data = rng.normal(size=(10, 10, 10, 1)).astype(np.float32) + 5
    data[0, 0, 0] = 1e4  # an outlier the clipping must remove
    out, stats = normalize(data, PreprocessConfig(normalize="percentile", percentiles=(1, 99)))
    lo, hi = np.percentile(data.astype(np.float64), (1, 99))
    clipped = np.clip(data.astype(np.float64), lo, hi)
    np.testing.assert_allclose(out, (clipped - clipped.mean()) / clipped.std(), atol=1e-5)
    assert stats[0]["clip_high"] == pytest.approx(hi)
    none, _ = normalize(data, PreprocessConfig(normalize="none"))
    np.testing.assert_array_equal(none, data)


def test_foreground_crop_with_margin_crops_label_alike():
    image = np.zeros((10, 10, 10, 2), np.float32)
    image[3:5, 4:7, 2:3, 1] = 1.0  # foreground in channel 1 only
    assert foreground_box(image) == ((3, 4, 2), (5, 7, 3))
    assert foreground_box(image, margin=3) == ((0, 1, 0), (8, 10, 6))
    assert foreground_box(np.zeros((4, 4, 4, 1))) == ((0, 0, 0), (4, 4, 4))
    assert foreground_box(image - 5, threshold=-4.5) == ((3, 4, 2), (5, 7, 3))
    label = np.arange(1000).reshape(10, 10, 10)
    cfg = PreprocessConfig(normalize="none", crop_foreground=True, crop_margin=1)
    out, lab, info = preprocess(image, label, (1, 1, 1), cfg, affine=np.eye(4))
    assert out.shape == (4, 5, 3, 2) and lab.shape == (4, 5, 3)
    np.testing.assert_array_equal(lab, label[2:6, 3:8, 1:4])
    assert info["crop_box"] == [[2, 3, 1], [6, 8, 4]]
    np.testing.assert_allclose(np.asarray(info["affine"])[:3, 3], [2, 3, 1])


def test_pad_or_crop_centre():
    image = np.arange(5, dtype=np.float32).reshape(5, 1, 1) + 1
    padded, _, offsets = pad_or_crop(image, None, (8, 1))
    np.testing.assert_array_equal(padded.ravel(), [0, 1, 2, 3, 4, 5, 0, 0])
    assert offsets == (-1, 0)
    label = np.arange(9).reshape(9, 1)
    cropped, lab, offsets = pad_or_crop(label[..., None].astype(np.float32), label, (4, 1))
    np.testing.assert_array_equal(lab.ravel(), [2, 3, 4, 5])
    assert offsets == (2, 0)


def test_full_chain_2d_and_3d(rng):
    for dim in (2, 3):
        image = np.zeros((12,) * dim + (1,), np.float32)
        image[(slice(3, 9),) * dim] = rng.normal(10, 2, size=(6,) * dim + (1,))
        label = (image[..., 0] != 0).astype(np.int32) * 2
        cfg = PreprocessConfig(spacing=(2.0,) * dim, crop_foreground=True, shape=(5,) * dim)
        out, lab, info = preprocess(image, label, (1.0,) * dim, cfg, affine=np.eye(4))
        assert out.shape == (5,) * dim + (1,) and lab.shape == (5,) * dim
        assert out.dtype == np.float32 and lab.dtype == np.int32
        assert set(np.unique(lab)) == {0, 2}
        assert info["original_shape"] == [12] * dim + [1]
        assert info["final_shape"] == [5] * dim + [1]
        assert info["spacing"] == [2.0] * dim


def test_mismatch_and_config_errors():
    image = np.zeros((4, 4, 4, 1), np.float32)
    with pytest.raises(DataError, match=r"^case_9: image and label shapes differ"):
        preprocess(image, np.zeros((4, 4, 5)), (1, 1, 1), PreprocessConfig(), case_id="case_9")
    with pytest.raises(DataError, match="spacing has 2 values"):
        preprocess(image, None, (1, 1), PreprocessConfig())
    with pytest.raises(ConfigError, match="'shape'"):
        preprocess(image, None, (1, 1, 1), PreprocessConfig(shape=(4, 4)))
    with pytest.raises(ConfigError, match="normalize"):
        PreprocessConfig(normalize="zcore")
    with pytest.raises(ConfigError, match="ct_window"):
        PreprocessConfig(ct_window=(240, -100))
    with pytest.raises(ConfigError, match="spacing"):
        PreprocessConfig(spacing=(1.0, 0.0, 1.0))


def _corners(affine, shape):
    """World coordinates of the outer corners of a grid of cells (voxel -0.5 and n - 0.5)."""
    lo = affine @ [*(-0.5 for _ in shape), 1]
    hi = affine @ [*(n - 0.5 for n in shape), 1]
    return lo[:3], hi[:3]


def test_resize_linear_hand_case_and_same_physical_extent():
    # Four 1 mm cells 0, 10, 20, 30 -> two 2 mm cells at old coordinates 0.5 and 2.5.
    image = (np.arange(4, dtype=np.float32) * 10).reshape(4, 1, 1, 1)
    affine = np.array([[0.0, 0, -3.0, 7.0], [1.0, 0, 0, -2.0], [0, 2.0, 0, 4.0], [0, 0, 0, 1]])
    out, _, spacing, new_affine = resize(image, None, (1.0, 2.0, 3.0), (2, 3, 1), affine=affine)
    assert out.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(out[:, 0, 0, 0], [5.0, 25.0], atol=1e-5)
    np.testing.assert_allclose(out[:, 1, 0, 0], out[:, 0, 0, 0])  # upsampled constant axis
    assert spacing == pytest.approx((2.0, 2.0 / 3.0, 3.0))
    for before, after in zip(_corners(affine, (4, 1, 1)), _corners(new_affine, (2, 3, 1)),
                             strict=True):
        np.testing.assert_allclose(after, before, atol=1e-12)
    # New voxel j is old voxel (j + 0.5) * step - 0.5: steps 2, 1/3 and 1.
    np.testing.assert_allclose(new_affine @ [1, 0, 0, 1], affine @ [2.5, -1 / 3, 0, 1])


def test_resize_labels_nearest_and_2d_rgb(rng):
    label = rng.integers(0, 4, size=(6, 9)).astype(np.int32)
    image = rng.normal(size=(6, 9, 3)).astype(np.float32)
    out, lab, spacing, _ = resize(image, label, (1.0, 1.0), (12, 3))
    assert out.shape == (12, 3, 3) and lab.shape == (12, 3)
    # Nearest, cell-centred: new (i, j) takes old (i // 2, 3 * j + 1).
    np.testing.assert_array_equal(lab, label[np.arange(12) // 2][:, [1, 4, 7]])
    assert spacing == (0.5, 3.0)
    # Channels are resized one by one: a channel that is constant stays so.
    image[..., 1] = 7.0
    out, _, _, _ = resize(image, None, (1.0, 1.0), (5, 4))
    np.testing.assert_allclose(out[..., 1], 7.0, atol=1e-5)


def test_preprocess_order_crop_spacing_resize_normalise_pad(rng):
    image = np.zeros((20, 20, 20, 1), np.float32)
    image[2:18, 4:16, 5:15] = rng.normal(100, 5, size=(16, 12, 10, 1))
    label = (image[..., 0] != 0).astype(np.int32)
    cfg = PreprocessConfig(crop_foreground=True, spacing=(2.0, 2.0, 2.0), resize=(6, 6, 6),
                           shape=(8, 6, 4))
    out, lab, info = preprocess(image, label, (1.0, 1.0, 1.0), cfg, affine=np.eye(4))
    assert info["crop_box"] == [[2, 4, 5], [18, 16, 15]]
    # The resize starts from the resampled crop: (16, 12, 10) mm at 2 mm.
    assert info["resize"] == {"from_shape": [8, 6, 5], "to_shape": [6, 6, 6],
                              "spacing": pytest.approx([16 / 6, 2.0, 10 / 6])}
    assert info["spacing"] == pytest.approx([16 / 6, 2.0, 10 / 6])
    assert out.shape == (8, 6, 4, 1) and lab.shape == (8, 6, 4)
    assert info["pad_crop"] == [-1, 0, 1]
    # Normalised on the resized 6^3 grid, then padded (the padded slabs are exactly 0).
    assert info["normalization"][0]["foreground_voxels"] == 6 ** 3
    np.testing.assert_array_equal(out[[0, -1]], 0.0)
    assert np.all(out[1:-1] != 0)
    # The whole chain is in the affine: output voxel 0's centre in world mm.
    step = np.array([16 / 6, 2.0, 10 / 6])
    expected = np.array([2, 4, 5]) - 0.5 + step / 2 + np.array([-1, 0, 1]) * step
    np.testing.assert_allclose(np.asarray(info["affine"])[:3, 3], expected, atol=1e-9)
    assert preprocess(image, None, (1, 1, 1), PreprocessConfig())[2]["resize"] is None


def test_output_size_cap_fails_before_any_allocation(monkeypatch):
    calls = []
    monkeypatch.setattr(preprocess_module.ndimage, "zoom", lambda *a, **k: calls.append(1))
    image = np.ones((4, 4, 2, 1), np.float32)
    with pytest.raises(DataError, match=r"^/data/huge.nii.gz: resampling to spacing \(1.0, 1.0, "
                       r"1.0\) would make a \(400000, 4, 2\) volume \(3,200,000 voxels\), "
                       r"more than max_voxels=1,000,000"):
        preprocess(image, None, (1e5, 1.0, 1.0), PreprocessConfig(spacing=(1, 1, 1),
                   max_voxels=10**6), case_id="huge", source="/data/huge.nii.gz")
    with pytest.raises(DataError, match=r"^huge: resizing to \(100, 100, 101\) would make"):
        preprocess(image, None, (1, 1, 1), PreprocessConfig(resize=(100, 100, 101),
                   max_voxels=10**6), case_id="huge")
    # The default cap is 512**3: the pixdim-1e5 header fails with it too.
    with pytest.raises(DataError, match="max_voxels=134,217,728"):
        preprocess(np.ones((64, 64, 2, 1), np.float32), None, (1e5, 1, 1),
                   PreprocessConfig(spacing=(1, 1, 1)))
    assert calls == []
    out, _, _ = preprocess(image, None, (1, 1, 1), PreprocessConfig(resize=(4, 4, 2),
                           max_voxels=32))  # exactly at the cap, and no resampling needed
    assert out.shape == (4, 4, 2, 1)


def _reference_share(mask):
    """Share outside the bounding box of `mask`, by numpy (1.0 when empty)."""
    hits = np.argwhere(mask)
    if len(hits) == 0:
        return 1.0
    extent = hits.max(0) - hits.min(0) + 1
    return 1.0 - np.prod(extent) / mask.size


def test_padding_share_with_and_without_threshold(rng):
    # CT in HU: air -1000 everywhere, a body of rows 2..7 along axis 0 only.
    ct = np.full((10, 6, 6, 1), -1000.0, np.float32)
    ct[2:8] = rng.normal(40, 10, size=(6, 6, 6, 1))
    cfg = PreprocessConfig(normalize="ct", ct_window=(-100, 240), foreground_threshold=-500)
    _, _, info = preprocess(ct, None, (1, 1, 1), cfg)
    assert info["padding_share"] == pytest.approx(0.4)
    # Padding to 12 rows: the box moves with the offsets, 6 of 12 rows are body.
    _, _, info = preprocess(ct, None, (1, 1, 1), dataclasses_replace(cfg, shape=(12, 6, 6)))
    assert info["padding_share"] == pytest.approx(0.5)
    # Without a threshold the zeros after normalisation count (the ct window maps air to 0).
    out, _, info = preprocess(ct, None, (1, 1, 1), dataclasses_replace(
        cfg, foreground_threshold=None, shape=(12, 8, 6)))
    assert info["padding_share"] == pytest.approx(_reference_share(out[..., 0] != 0))
    assert info["padding_share"] == pytest.approx(1 - (6 * 6 * 6) / (12 * 8 * 6))
    # A crop to the threshold's box leaves no padding.
    _, _, info = preprocess(ct, None, (1, 1, 1), dataclasses_replace(cfg, crop_foreground=True))
    assert info["padding_share"] == 0.0
    # Nothing above the threshold: all padding.
    _, _, info = preprocess(ct, None, (1, 1, 1), dataclasses_replace(cfg, foreground_threshold=500))
    assert info["padding_share"] == 1.0
    for _ in range(5):
        mask = np.zeros((7, 5, 6), bool)
        mask[tuple(rng.integers(0, n, size=3) for n in mask.shape)] = True
        box = preprocess_module.foreground_extent(mask[..., None].astype(np.float32))
        assert padding_share(mask.shape, box) == pytest.approx(_reference_share(mask))


def dataclasses_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_new_options_are_checked():
    for key, kwargs in (("resize", {"resize": (4, 0, 4)}), ("max_voxels", {"max_voxels": 0}),
                        ("max_padding_share", {"max_padding_share": 1.5})):
        with pytest.raises(ConfigError, match=f"'{key}'"):
            PreprocessConfig(**kwargs)
    with pytest.raises(ConfigError, match="'resize'.*2 values but the data is 3D"):
        preprocess(np.zeros((4, 4, 4, 1)), None, (1, 1, 1), PreprocessConfig(resize=(4, 4)))
    assert PreprocessConfig(resize=[4.0, 5, 6]).resize == (4, 5, 6)
