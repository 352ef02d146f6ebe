"""Predictions back on the source grid: resample_to_grid, source_grid, write_prediction."""

import os

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from ssl3d_keras.data.nifti import load_nifti
from ssl3d_keras.data.phantoms import make_phantom, write_phantom_dataset
from ssl3d_keras.data.pipeline import shard_volumes
from ssl3d_keras.data.prepare import prepare_dataset
from ssl3d_keras.data.preprocess import PreprocessConfig
from ssl3d_keras.downstream.geometry import resample_to_grid, source_grid, write_prediction
from ssl3d_keras.errors import DataError

# A non-canonical grid: voxel axis 0 runs posterior (1.5 mm), axis 1 left (1 mm),
# axis 2 superior (2 mm), origin away from the world origin.
PLS_AFFINE = np.array([[0.0, -1.0, 0.0, 12.25],
                       [-1.5, 0.0, 0.0, -7.75],
                       [0.0, 0.0, 2.0, 30.5],
                       [0.0, 0.0, 0.0, 1.0]])


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _mean_label_dice(pred, truth):
    return float(np.mean([_dice(pred == v, truth == v) for v in np.unique(truth) if v != 0]))


def _permutation_affine(perm, shape):
    """Affine of the grid that is `array.transpose(perm)` of a grid with identity affine."""
    matrix = np.zeros((4, 4))
    matrix[3, 3] = 1
    for k, axis in enumerate(perm):
        matrix[axis, k] = 1.0  # target axis k walks source axis perm[k]
    return matrix


# ----- resample_to_grid -----------------------------------------------------------------------


def test_identity_grid_returns_the_same_array(rng):
    array = rng.integers(0, 5, (6, 7, 8)).astype(np.int16)
    affine = np.diag([1.5, 0.8, 2.0, 1.0])
    affine[:3, 3] = [10.0, -3.0, 7.0]
    out = resample_to_grid(array, affine, array.shape, affine)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, array)


def test_flip_and_permutation_equal_numpy(rng):
    array = rng.integers(0, 9, (4, 5, 6, 2)).astype(np.int32)
    base = np.diag([2.0, 1.0, 3.0, 1.0])
    base[:3, 3] = [5.0, -1.0, 4.0]
    # Flip of axis 0: target voxel t sits where source voxel (3 - t0, t1, t2) sits.
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = array.shape[0] - 1
    out = resample_to_grid(array, base, array.shape[:3], base @ flip)
    np.testing.assert_array_equal(out, np.flip(array, 0))
    # Permutation, and flip then permutation (what canonical reorientation does).
    perm = (2, 0, 1)
    shape = tuple(array.shape[a] for a in perm)
    out = resample_to_grid(array, base, shape, base @ _permutation_affine(perm, shape))
    np.testing.assert_array_equal(out, np.transpose(array, (*perm, 3)))
    out = resample_to_grid(array, base, shape, base @ flip @ _permutation_affine(perm, shape))
    np.testing.assert_array_equal(out, np.transpose(np.flip(array, 0), (*perm, 3)))
    # Linear interpolation at integer positions is exact too.
    values = rng.random((4, 5, 6)).astype(np.float32)
    out = resample_to_grid(values, base, values.shape, base @ flip, order=1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.flip(values, 0), atol=1e-6)


def test_cell_centred_upsampling_nearest_and_linear(rng):
    # Source voxels of 2 mm centred at 0, 2, 4, ...: cell 0 spans [-1, 1], so the 1 mm grid
    # over the same extent starts at -0.5 and each source voxel becomes 2 x 2 x 2 voxels.
    array = rng.integers(1, 9, (3, 4, 2)).astype(np.uint8)
    source = np.diag([2.0, 2.0, 2.0, 1.0])
    target = np.eye(4)
    target[:3, 3] = -0.5
    shape = tuple(2 * n for n in array.shape)
    out = resample_to_grid(array, source, shape, target)
    expected = array.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    np.testing.assert_array_equal(out, expected)

    # Linear: a ramp along axis 0 stays a ramp; target voxel t is at source (t + 0.5) / 2 - 0.5,
    # clamped to the edge voxels inside the border cells.
    ramp = np.broadcast_to(np.arange(5.0)[:, None, None] * 10, (5, 2, 2))
    out = resample_to_grid(ramp, source, (10, 4, 4), target, order=1)
    position = np.clip((np.arange(10) + 0.5) / 2 - 0.5, 0, 4)
    np.testing.assert_allclose(out[:, 1, 2], position * 10, atol=1e-9)


def test_voxels_outside_the_source_get_cval():
    array = np.ones((4, 4, 4), np.int32)
    target = np.eye(4)
    target[0, 3] = 2.0  # target voxel t0 is source voxel t0 + 2
    out = resample_to_grid(array, np.eye(4), (4, 4, 4), target, cval=7)
    np.testing.assert_array_equal(out[:, 0, 0], [1, 1, 7, 7])
    # Half a voxel beyond the last centre is still inside its cell; further out is not.
    target[0, 3] = 0.55  # voxel 2 -> 2.55 (cell of voxel 3), voxel 3 -> 3.55 (outside)
    out = resample_to_grid(array, np.eye(4), (4, 4, 4), target, cval=7)
    np.testing.assert_array_equal(out[:, 0, 0], [1, 1, 1, 7])
    probs = resample_to_grid(array.astype(np.float32), np.eye(4), (4, 4, 4), target, order=1,
                             cval=-1.0)
    np.testing.assert_allclose(probs[:, 0, 0], [1, 1, 1, -1])


def test_rejects_2d_and_bad_arguments():
    with pytest.raises(ValueError, match="rank-2"):
        resample_to_grid(np.zeros((4, 4)), np.eye(4), (4, 4, 4), np.eye(4))
    with pytest.raises(ValueError, match="rank-5"):
        resample_to_grid(np.zeros((2, 2, 2, 2, 2)), np.eye(4), (2, 2, 2), np.eye(4))
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        resample_to_grid(np.zeros((4, 4, 4)), np.eye(3), (4, 4, 4), np.eye(4))
    with pytest.raises(ValueError, match="invertible"):
        resample_to_grid(np.zeros((4, 4, 4)), np.zeros((4, 4)), (4, 4, 4), np.eye(4))
    with pytest.raises(ValueError, match="target_shape"):
        resample_to_grid(np.zeros((4, 4, 4)), np.eye(4), (4, 4), np.eye(4))
    with pytest.raises(ValueError, match="order"):
        resample_to_grid(np.zeros((4, 4, 4)), np.eye(4), (4, 4, 4), np.eye(4), order=3)


# ----- source_grid / write_prediction ---------------------------------------------------------


def test_source_grid_reads_the_stored_grid_and_names_bad_files(tmp_path):
    data = np.zeros((5, 6, 7, 2), np.float32)
    nib.save(nib.Nifti1Image(data, PLS_AFFINE), str(tmp_path / "img.nii.gz"))
    shape, affine = source_grid(tmp_path / "img.nii.gz")
    assert shape == (5, 6, 7)
    np.testing.assert_array_equal(affine, PLS_AFFINE)

    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not a nifti file at all")
    for bad in (garbage, tmp_path / "missing.nii"):
        with pytest.raises(DataError, match=bad.name):
            source_grid(bad)
        with pytest.raises(DataError, match=bad.name):
            write_prediction(tmp_path / "pred.nii.gz", np.zeros((2, 2, 2)), np.eye(4), bad)
    assert not (tmp_path / "pred.nii.gz").exists()


def test_write_prediction_header_codes_dtype_and_atomic(tmp_path):
    source = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), PLS_AFFINE)
    source.set_sform(PLS_AFFINE, code=0)
    source.set_qform(PLS_AFFINE, code=3)
    nib.save(source, str(tmp_path / "src.nii"))
    label = np.arange(60).reshape(3, 4, 5) % 3
    written = write_prediction(tmp_path / "out" / "pred.nii.gz", label, PLS_AFFINE,
                               tmp_path / "src.nii", dtype=np.int16)
    assert written == tmp_path / "out" / "pred.nii.gz"
    assert os.listdir(tmp_path / "out") == ["pred.nii.gz"]  # no temporary file left
    img = nib.load(str(written))
    assert img.get_data_dtype() == np.int16
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 3
    np.testing.assert_allclose(img.get_qform(), PLS_AFFINE, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj), label)
    with pytest.raises(ValueError, match="uint8"):
        write_prediction(tmp_path / "big.nii.gz", label + 300, PLS_AFFINE, tmp_path / "src.nii")
    with pytest.raises(ValueError, match="rank-4"):
        write_prediction(tmp_path / "p4.nii.gz", label[..., None], PLS_AFFINE,
                         tmp_path / "src.nii")


def test_phantom_round_trip_through_prepare(tmp_path):
    """Non-canonical, anisotropic case -> prepare (reorient, crop, resample, pad/crop) -> back."""
    src = write_phantom_dataset(tmp_path / "src", 1, size=(16, 20, 24))
    image, label = make_phantom(7, size=(16, 20, 24))
    image[label == 0] = 0  # a background of zeros, so the foreground crop cuts something
    # Stored order: flip axis 0 (left -> right becomes right -> left), then transpose.
    stored_image = np.transpose(np.flip(image[..., 0], 0), (1, 2, 0))
    stored_label = np.transpose(np.flip(label, 0), (1, 2, 0)).astype(np.uint8)
    assert nib.aff2axcodes(PLS_AFFINE) == ("P", "L", "S")
    image_path = src / "imagesTr" / "phantom_000.nii.gz"
    label_path = src / "labelsTr" / "phantom_000.nii.gz"
    nib.save(nib.Nifti1Image(stored_image, PLS_AFFINE), str(image_path))
    nib.save(nib.Nifti1Image(stored_label, PLS_AFFINE), str(label_path))

    config = PreprocessConfig(spacing=(1, 1, 1), crop_foreground=True, crop_margin=2,
                              shape=(20, 34, 26))
    manifest = prepare_dataset(src, tmp_path / "prepared", preprocess=config, progress=False)
    case = manifest["cases"][0]
    assert case["sources"][0] == str(image_path.resolve())
    # The chain really crops, resamples, pads and crops.
    assert case["crop_box"] is not None and case["original_shape"][:3] != [16, 20, 24]
    assert min(case["pad_crop"]) < 0 < max(case["pad_crop"])
    (volume,) = list(shard_volumes(tmp_path / "prepared").as_numpy_iterator())
    prepared_label = volume["label"]
    assert prepared_label.shape == (20, 34, 26)

    out = write_prediction(tmp_path / "pred.nii.gz", prepared_label, case["affine"],
                           case["sources"][0])
    written = nib.load(str(out))
    truth = np.asarray(nib.load(str(label_path)).dataobj)
    assert written.shape == stored_label.shape
    np.testing.assert_array_equal(written.affine, nib.load(str(image_path)).affine)
    got = np.asarray(written.dataobj)
    assert _dice(got > 0, truth > 0) >= 0.9
    assert _mean_label_dice(got, truth) >= 0.9
    for value in np.unique(truth)[1:]:
        assert (got == value).any(), f"label {value} lost"
        shift = np.argwhere(got == value).mean(0) - np.argwhere(truth == value).mean(0)
        assert np.abs(shift).max() <= 1.0, f"label {value} centroid moved by {shift}"

    # Sensitivity: ignoring the affines (stretching the prepared array onto the source
    # shape) agrees far worse, so the checks above do measure the geometry.
    naive = ndimage.zoom(prepared_label, np.divide(truth.shape, prepared_label.shape), order=0,
                         grid_mode=True, mode="nearest")
    assert naive.shape == truth.shape
    assert _mean_label_dice(naive, truth) < 0.6
    assert _mean_label_dice(naive, truth) < _mean_label_dice(got, truth) - 0.3


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz"])
def test_nibabel_file_back_from_canonical_is_exact(tmp_path, nibabel_data, name):
    path = os.path.join(nibabel_data, name)
    raw_img = nib.load(path)
    assert nib.aff2axcodes(raw_img.affine) != ("R", "A", "S")  # reorientation does something
    raw = raw_img.get_fdata()
    raw = raw[..., 0] if raw.ndim == 4 else raw
    volume = load_nifti(path)  # canonical RAS, channels last
    threshold = float(np.mean(volume.array[..., 0]))
    fake_label = (volume.array[..., 0] > threshold).astype(np.uint8)
    expected = (raw > threshold).astype(np.uint8)
    assert not np.array_equal(fake_label, expected)  # the canonical array is not the stored one

    out = write_prediction(tmp_path / "pred.nii.gz", fake_label, volume.affine, path)
    written = nib.load(str(out))
    assert written.shape == raw.shape
    np.testing.assert_array_equal(written.affine, raw_img.affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected)


def test_a_prediction_for_a_dicom_series_lands_on_the_series_grid(tmp_path):
    """DICOM has no stored NIfTI grid: the prediction goes onto the series' loaded grid."""
    from ssl3d_keras.data.dicom import load_series
    from ssl3d_keras.downstream.evaluate import write_case_prediction
    from ssl3d_keras.downstream.predict import _source_grid
    from tests.data.helpers_dicom import oblique_directions, write_series

    stored = np.zeros((14, 12, 9), np.int16)
    stored[3:10, 4:9, 2:7] = 1000  # a box (-24 HU after the -1024 intercept; air -1024)
    paths = write_series(tmp_path / "dicom" / "PT01", stored, directions=oblique_directions())
    # Crop and pad only (whole voxels): the way back must then be exact.
    config = PreprocessConfig(normalize="ct", crop_foreground=True, foreground_threshold=-500,
                              crop_margin=1, shape=(16, 16, 16))
    manifest = prepare_dataset(tmp_path / "dicom", tmp_path / "prepared", preprocess=config,
                               layout="dicom", progress=False)
    case = manifest["cases"][0]
    (volume,) = list(shard_volumes(tmp_path / "prepared").as_numpy_iterator())
    prediction = (volume["image"][..., 0] > 0.25).astype(np.int32)  # -500 HU in the CT window

    class Dataset:  # what write_case_prediction reads of a LabelledDataset
        cases = {case["id"]: case}

    out = write_case_prediction(tmp_path / "pred", Dataset, case["id"], prediction)
    series = load_series(paths)
    written = nib.load(str(out))
    np.testing.assert_allclose(written.affine, series.affine, atol=1e-6)
    assert written.shape == series.array.shape[:3]
    np.testing.assert_array_equal(np.asarray(written.dataobj) > 0, series.array[..., 0] > -500)

    class Loaded:  # what ssl3d predict passes for a freshly loaded case
        sources, image, affine = [str(p) for p in paths], series.array, series.affine

    shape, affine = _source_grid(Loaded)
    assert shape == series.array.shape[:3] and affine is series.affine
