"""NIfTI reading: nibabel's own test files as the independent reference, and every bad input."""

import gzip
import os
import struct

import nibabel as nib
import numpy as np
import pytest

from ssl3d_keras.data.nifti import (
    Volume,
    check_same_grid,
    load_label,
    load_nifti,
    read_header_shape,
    save_nifti,
)
from ssl3d_keras.errors import DataError
from tests.data.helpers_nifti import LAS_AFFINE, write_nifti

NIBABEL_FILES = ["anatomical.nii", "functional.nii", "example_nifti2.nii.gz",
                 "example4d.nii.gz", "reoriented_anat_moved.nii"]


def _one_line_error(excinfo, *needles):
    text = str(excinfo.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, (needle, text)


@pytest.mark.parametrize("name", NIBABEL_FILES)
def test_matches_nibabel_closest_canonical(nibabel_data, name):
    path = os.path.join(nibabel_data, name)
    ref = nib.as_closest_canonical(nib.load(path))
    ref_data = ref.get_fdata()
    vol = load_nifti(path)
    assert isinstance(vol, Volume) and vol.array.dtype == np.float32
    expected_shape = ref_data.shape[:3] + (ref_data.shape[3] if ref_data.ndim == 4 else 1,)
    assert vol.array.shape == expected_shape
    np.testing.assert_allclose(vol.array.reshape(ref_data.shape), ref_data, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-6)
    np.testing.assert_allclose(vol.spacing, ref.header.get_zooms()[:3], rtol=1e-6)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert vol.path == path


def _raw_voxels(path, dtype, shape, offset=352):
    with open(path, "rb") as f:
        f.seek(offset)
        raw = np.frombuffer(f.read(), dtype=dtype, count=int(np.prod(shape)))
    return raw.reshape(shape, order="F")


def test_big_endian_int16_read_from_raw_bytes(nibabel_data):
    path = os.path.join(nibabel_data, "anatomical.nii")
    assert nib.load(path).header.endianness == ">"
    raw = _raw_voxels(path, ">i2", (33, 41, 25))
    vol = load_nifti(path)
    # The file is LAS: canonical RAS order flips axis 0.
    np.testing.assert_array_equal(vol.array[..., 0], raw[::-1].astype(np.float32))
    assert vol.spacing == (2.0, 2.0, 2.0)
    assert vol.affine[0, 0] > 0


def test_scaled_4d_as_channels_and_as_time(nibabel_data):
    path = os.path.join(nibabel_data, "functional.nii")
    with open(path, "rb") as f:
        header = f.read(348)
    slope, inter = struct.unpack("<ff", header[112:120])
    assert slope not in (0.0, 1.0)
    raw = _raw_voxels(path, "<i2", (17, 21, 3, 20))
    expected = (raw * np.float64(slope) + inter)[::-1]  # LAS -> RAS
    channels = load_nifti(path, four_d="channels")
    assert channels.array.shape == (17, 21, 3, 20)
    np.testing.assert_allclose(channels.array, expected, rtol=1e-6, atol=1e-3)
    time = load_nifti(path, four_d="time")
    assert time.array.shape == (20, 17, 21, 3, 1)
    np.testing.assert_array_equal(time.array[..., 0], np.moveaxis(channels.array, -1, 0))
    frame = load_nifti(path, four_d="time", frame=7)
    np.testing.assert_array_equal(frame.array, time.array[7])
    with pytest.raises(DataError) as e:
        load_nifti(path, four_d="error")
    _one_line_error(e, "functional.nii", "4D")
    with pytest.raises(DataError):
        load_nifti(path, four_d="time", frame=20)


def test_nifti2_is_read(nibabel_data):
    path = os.path.join(nibabel_data, "example_nifti2.nii.gz")
    assert isinstance(nib.load(path), nib.Nifti2Image)
    vol = load_nifti(path)
    assert vol.array.shape == (32, 20, 12, 2)
    assert read_header_shape(path) == ((32, 20, 12), 2)


@pytest.mark.parametrize("dtype", ["u1", "<i2", ">i2", ">i4", "<f4", ">f8"])
def test_any_dtype_and_byte_order(tmp_path, rng, dtype):
    data = rng.integers(0, 200, size=(4, 5, 6)).astype(dtype)
    path = write_nifti(tmp_path / "x.nii", data, np.diag([1.5, 1.5, 3.0, 1.0]), dtype=dtype)
    vol = load_nifti(path)
    np.testing.assert_array_equal(vol.array[..., 0], data.astype(np.float32))
    assert vol.spacing == (1.5, 1.5, 3.0)


def test_slope_intercept_applied(tmp_path, rng):
    stored = rng.integers(-100, 100, size=(4, 4, 4)).astype(np.int16)
    path = write_nifti(tmp_path / "s.nii.gz", stored, dtype=np.int16, slope=0.5, inter=-3.0)
    np.testing.assert_allclose(load_nifti(path).array[..., 0], stored * 0.5 - 3.0)


def test_reorients_las_and_permuted_axes(tmp_path, rng):
    data = rng.normal(size=(4, 5, 6)).astype(np.float32)
    vol = load_nifti(write_nifti(tmp_path / "las.nii", data, LAS_AFFINE))
    np.testing.assert_array_equal(vol.array[..., 0], data[::-1])
    assert vol.spacing == (2.0, 3.0, 4.0)
    # World position of a voxel is unchanged by the reorientation.
    np.testing.assert_allclose(vol.affine @ [0, 1, 2, 1], LAS_AFFINE @ [3, 1, 2, 1])
    # Axes stored as (S, R, A): canonical order transposes them.
    perm = np.array([[0, 2.0, 0, 0], [0, 0, 3.0, 0], [4.0, 0, 0, 0], [0, 0, 0, 1]])
    vol = load_nifti(write_nifti(tmp_path / "perm.nii.gz", data, perm))
    ref = nib.as_closest_canonical(nib.load(tmp_path / "perm.nii.gz"))
    np.testing.assert_array_equal(vol.array[..., 0], ref.get_fdata())
    assert vol.array.shape[:3] == (5, 6, 4)
    assert vol.spacing == (2.0, 3.0, 4.0)
    raw = load_nifti(tmp_path / "perm.nii.gz", canonical=False)
    assert raw.array.shape[:3] == (4, 5, 6)


def test_truncated_and_corrupt_gzip(tmp_path, rng):
    path = write_nifti(tmp_path / "a.nii.gz", rng.normal(size=(12, 12, 12)), dtype=np.float32)
    blob = open(path, "rb").read()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(blob[: len(blob) * 2 // 3])
    with pytest.raises(DataError) as e:
        load_nifti(cut)
    _one_line_error(e, "cut.nii.gz", "truncated or corrupt")
    broken = bytearray(blob)
    for i in range(len(blob) // 2, len(blob) // 2 + 40):
        broken[i] ^= 0xFF
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(broken))
    with pytest.raises(DataError) as e:
        load_nifti(bad)
    _one_line_error(e, "bad.nii.gz")


def test_not_nifti(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_text("this is not an image\n" * 40)
    with pytest.raises(DataError) as e:
        load_nifti(path)
    _one_line_error(e, "notes.nii", "not a readable NIfTI")
    with pytest.raises(DataError) as e:
        load_nifti(tmp_path / "missing.nii.gz")
    _one_line_error(e, "missing.nii.gz", "not found")


def test_header_size_mismatch_checked_before_reading(tmp_path, rng):
    path = write_nifti(tmp_path / "a.nii", rng.normal(size=(6, 6, 6)), dtype=np.float32)
    blob = open(path, "rb").read()
    short = tmp_path / "short.nii"
    short.write_bytes(blob[:-100])
    with pytest.raises(DataError) as e:
        load_nifti(short)
    _one_line_error(e, "short.nii", "declares", str(len(blob) - 100))
    long = tmp_path / "long.nii"
    long.write_bytes(blob + b"\0" * 8)
    with pytest.raises(DataError):
        load_nifti(long)
    # A header claiming 4000^3 float32 voxels (256 GB): refused without allocating.
    huge = bytearray(blob)
    huge[40:56] = struct.pack("<8h", 3, 4000, 4000, 4000, 1, 1, 1, 1)
    (tmp_path / "huge.nii").write_bytes(bytes(huge))
    with pytest.raises(DataError) as e:
        load_nifti(tmp_path / "huge.nii")
    _one_line_error(e, "huge.nii", "(4000, 4000, 4000)")
    # Compressed: a well-formed gzip of a short stream (ISIZE disagrees, stream is counted).
    (tmp_path / "short.nii.gz").write_bytes(gzip.compress(blob[:-64]))
    with pytest.raises(DataError) as e:
        load_nifti(tmp_path / "short.nii.gz")
    _one_line_error(e, "short.nii.gz", "uncompressed")


def test_2d_nan_inf_rejected(tmp_path, rng):
    flat = write_nifti(tmp_path / "flat.nii", rng.normal(size=(8, 8)), dtype=np.float32)
    with pytest.raises(DataError) as e:
        load_nifti(flat)
    _one_line_error(e, "flat.nii", "2D")
    data = rng.normal(size=(4, 4, 4)).astype(np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    with pytest.raises(DataError) as e:
        load_nifti(write_nifti(tmp_path / "nan.nii", data))
    _one_line_error(e, "nan.nii", "1 NaN and 1 Inf")


def test_labels_integer_and_declared(tmp_path):
    label = np.zeros((4, 4, 4), np.float32)
    label[1:3, 1:3, 1:3] = 2.0
    path = write_nifti(tmp_path / "lab.nii.gz", label, LAS_AFFINE)
    out, affine, spacing = load_label(path, classes=(0, 1, 2))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, label[::-1].astype(np.int32))
    assert spacing == (2.0, 3.0, 4.0)
    with pytest.raises(DataError) as e:
        load_label(path, classes=(0, 1))
    _one_line_error(e, "lab.nii.gz", "[2]", "declared")
    label[0, 0, 0] = 0.5
    with pytest.raises(DataError) as e:
        load_label(write_nifti(tmp_path / "frac.nii", label))
    _one_line_error(e, "frac.nii", "non-integer", "0.5")
    with pytest.raises(DataError) as e:
        load_label(write_nifti(tmp_path / "four.nii", np.zeros((4, 4, 4, 2), np.uint8)))
    _one_line_error(e, "four.nii", "3D")


def test_check_same_grid_names_case():
    a = np.eye(4)
    check_same_grid("case_1", (4, 4, 4), a, (4, 4, 4), a + 1e-5)
    with pytest.raises(DataError) as e:
        check_same_grid("case_1", (4, 4, 4), a, (4, 4, 5), a)
    _one_line_error(e, "case_1", "shapes differ", "(4, 4, 5)")
    b = a.copy()
    b[0, 3] = 2.0
    with pytest.raises(DataError) as e:
        check_same_grid("case_1", (4, 4, 4), a, (4, 4, 4), b)
    _one_line_error(e, "case_1", "affines differ")


def test_save_round_trip_is_atomic(tmp_path, rng):
    image = rng.normal(size=(4, 5, 6, 2)).astype(np.float32)
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    save_nifti(tmp_path / "img.nii.gz", image, affine)
    vol = load_nifti(tmp_path / "img.nii.gz")
    np.testing.assert_array_equal(vol.array, image)
    np.testing.assert_allclose(vol.affine, affine)
    label = rng.integers(0, 3, size=(4, 5, 6))
    save_nifti(tmp_path / "lab.nii", label, affine, label=True)
    assert nib.load(tmp_path / "lab.nii").get_data_dtype() == np.uint8
    np.testing.assert_array_equal(load_label(tmp_path / "lab.nii")[0], label)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nii.gz", "lab.nii"]
