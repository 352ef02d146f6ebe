"""DICOM series: discovery, slice order, rescale, the RAS affine and every broken series."""

import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tensorflow as tf
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from ssl3d_keras.data.dicom import find_series, load_series, read_series_shape
from ssl3d_keras.data.layouts import detect_layout, discover
from ssl3d_keras.data.prepare import prepare_dataset
from ssl3d_keras.data.shards import parse_example
from ssl3d_keras.errors import DataError
from tests.data.helpers_dicom import (
    AXIAL,
    DICOMDIR_TESTS,
    oblique_directions,
    write_series,
    write_slice,
)
from tests.data.helpers_nifti import write_nifti

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _stored(rng, shape=(6, 5, 8)):
    return rng.integers(-200, 1500, size=shape).astype(np.int16)


def _copy_as_slice(src, dst, position, series_uid="9.8.7"):
    ds = pydicom.dcmread(src)
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return ds


def _canonical_reference(array, affine):
    """nibabel's own reorientation of the non-canonical volume: the independent reference."""
    img = nib.as_closest_canonical(nib.Nifti1Image(array[..., 0], affine))
    return np.asarray(img.dataobj), img.affine


# ----- real series that pydicom ships ----------------------------------------------------------


def test_real_ct_series_shape_hu_and_affine():
    files = sorted((DICOMDIR_TESTS / "98892001" / "CT5N").iterdir())
    raw = load_series(files, canonical=False)
    datasets = sorted((pydicom.dcmread(f) for f in files),
                      key=lambda d: float(d.ImagePositionPatient[2]))  # axial: z is the normal
    assert raw.array.shape == (16, 16, 5, 1) and raw.array.dtype == np.float32
    for k, ds in enumerate(datasets):
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(raw.array[:, :, k, 0], hu.T)
    assert raw.array.min() < 0  # intercept -1024 applied: stored values are all positive
    first = np.array([float(v) for v in datasets[0].ImagePositionPatient])
    np.testing.assert_allclose(raw.affine @ [0, 0, 0, 1], [-first[0], -first[1], first[2], 1])
    np.testing.assert_allclose(raw.spacing, (0.488281, 0.488281, 2.5), atol=1e-6)

    vol = load_series(files)
    ref_array, ref_affine = _canonical_reference(raw.array, raw.affine)
    np.testing.assert_array_equal(vol.array[..., 0], ref_array)
    np.testing.assert_allclose(vol.affine, ref_affine, atol=1e-9)
    assert np.all(np.diag(vol.affine)[:3] > 0)  # RAS
    assert read_series_shape(files) == vol.array.shape[:3]


def test_real_broken_series_are_data_errors():
    cases = [
        ("77654033/CT2", "17136", "unevenly spaced"),  # 103 mm gap before 1.25 mm steps
        ("98892001/CT2N", "6924", "orientations differ"),  # two scout planes
        ("98892003/MR700", "MR700", "orientations differ"),
        ("77654033/CR1", "6154", "has no ImagePositionPatient"),  # a radiograph
        ("TINY_ALPHA/PT000000/ST000000/SE000000", "IM0000", "holds no pixel data"),
    ]
    for folder, name, problem in cases:
        files = sorted(p for p in (DICOMDIR_TESTS / folder).iterdir())
        with pytest.raises(DataError, match=problem) as info:
            load_series(files)
        assert name in info.value.source, folder


def test_find_series_names_cases_by_folder_or_series():
    cases = dict(find_series(DICOMDIR_TESTS))
    assert len(cases["98892001/CT5N"]) == 5
    assert len(cases["TINY_ALPHA/PT000000/ST000000/SE000000"]) == 50
    # MR1 mixes three single-image series with one number and description.
    assert [c for c in cases if c.startswith("98892003/MR1/")] == [
        f"98892003/MR1/98890234_s1_FAST_LOCALIZER_{n}" for n in (1, 2, 3)]
    assert "98892003/MR2/98890234_s2_FAST_LOCALIZER" in cases
    # A file that is not DICOM is a case of its own (reported), DICOMDIRs are not cases.
    assert cases["TINY_ALPHA/README"] == (str(DICOMDIR_TESTS / "TINY_ALPHA" / "README"),)
    assert not any("DICOMDIR" in f for files in cases.values() for f in files)
    assert list(cases) == sorted(cases)


def test_single_file_images_as_two_slice_series(tmp_path):
    ct = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(ct)
    origin = np.array([float(v) for v in ds.ImagePositionPatient])
    _copy_as_slice(ct, tmp_path / "ct" / "b", origin)
    _copy_as_slice(ct, tmp_path / "ct" / "a", origin + [0, 0, 5.0])  # name order != slice order
    vol = load_series(sorted((tmp_path / "ct").iterdir()), canonical=False)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert vol.array.shape == (128, 128, 2, 1)
    np.testing.assert_array_equal(vol.array[:, :, 0, 0], hu.T.astype(np.float32))
    np.testing.assert_allclose(vol.affine @ [0, 0, 0, 1], [*(origin * [-1, -1, 1]), 1],
                               atol=1e-4)
    np.testing.assert_allclose(vol.spacing, (0.661468, 0.661468, 5.0), atol=1e-4)

    # RLE-compressed MR decodes without extra packages (no rescale tags: slope 1, intercept 0).
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    rle = get_testdata_file("MR_small_RLE.dcm")
    origin = np.array([float(v) for v in mr.ImagePositionPatient])
    for k in range(3):
        _copy_as_slice(rle, tmp_path / "mr" / f"{k}.dcm", origin + [0, 0, 0.8 * k])
    vol = load_series(sorted((tmp_path / "mr").iterdir()), canonical=False)
    assert vol.array.shape == (64, 64, 3, 1)
    np.testing.assert_array_equal(vol.array[:, :, 2, 0], mr.pixel_array.T)


def test_files_that_are_not_a_slice_of_a_volume(tmp_path):
    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    origin = np.array([float(v) for v in mr.ImagePositionPatient])
    jpeg_ls = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    for k in range(2):
        _copy_as_slice(jpeg_ls, tmp_path / "jls" / f"{k}.dcm", origin + [0, 0, 0.8 * k])
    files = sorted((tmp_path / "jls").iterdir())
    try:  # decodable only when a JPEG-LS plugin (pylibjpeg, gdcm, pyjpegls) is installed
        _ = pydicom.dcmread(jpeg_ls).pixel_array
    except RuntimeError:
        with pytest.raises(DataError, match="compressed with 'JPEG-LS Lossless") as info:
            load_series(files)
        assert info.value.source.endswith("0.dcm")
    else:
        np.testing.assert_array_equal(load_series(files, canonical=False).array[:, :, 0, 0],
                                      mr.pixel_array.T)
    single = [
        (get_testdata_file("rtdose.dcm"), "multi-frame image \\(15 frames\\)"),
        (get_testdata_file("SC_rgb_small_odd.dcm"), "3 samples per pixel"),
        (get_testdata_file("rtplan.dcm"), "holds no pixel data"),
        (get_testdata_file("MR_small.dcm"), "series of one slice"),
    ]
    for path, problem in single:
        with pytest.raises(DataError, match=problem) as info:
            load_series([path])
        assert info.value.source == path


# ----- series written here ---------------------------------------------------------------------


def test_axial_affine_is_the_hand_computed_one(tmp_path, rng):
    stored = _stored(rng)
    write_series(tmp_path, stored, origin=(-100.0, -120.0, 30.0), pixel_spacing=(0.8, 0.6),
                 step=2.5, slope=2.0, intercept=-1000.0)
    vol = load_series(sorted(tmp_path.iterdir()), canonical=False)
    # Columns: i steps 0.6 mm along +x (LPS) = -x (RAS); j steps 0.8 mm along +y = -y; k 2.5 mm.
    expected = np.array([[-0.6, 0, 0, 100.0], [0, -0.8, 0, 120.0], [0, 0, 2.5, 30.0],
                         [0, 0, 0, 1]])
    np.testing.assert_allclose(vol.affine, expected, atol=1e-6)
    np.testing.assert_array_equal(vol.array[..., 0], stored * 2.0 - 1000.0)
    canonical = load_series(sorted(tmp_path.iterdir()))
    np.testing.assert_array_equal(canonical.array[..., 0], (stored * 2.0 - 1000.0)[::-1, ::-1])
    np.testing.assert_allclose(canonical.affine, [[0.6, 0, 0, 100 - 5 * 0.6],
                                                  [0, 0.8, 0, 120 - 4 * 0.8],
                                                  [0, 0, 2.5, 30.0], [0, 0, 0, 1]], atol=1e-6)
    assert canonical.spacing == pytest.approx((0.6, 0.8, 2.5))


def test_oblique_series_follows_the_dicom_standard(tmp_path, rng):
    stored = _stored(rng)
    directions = oblique_directions()
    origin = np.array([12.5, -40.0, 7.25])
    paths = write_series(tmp_path, stored, origin=origin, directions=directions, step=1.5,
                         pixel_spacing=(0.9, 0.7), seed=3)
    raw = load_series(sorted(tmp_path.iterdir()), canonical=False)
    row, col = np.array(directions[0]), np.array(directions[1])
    for i, j, k in [(0, 0, 0), (5, 4, 7), (2, 3, 4)]:
        ds = pydicom.dcmread(paths[k])
        # PS3.3 C.7.6.2.1.1: pixel (row j, column i) lies at S + i * dc * X + j * dr * Y.
        s = np.array([float(v) for v in ds.ImagePositionPatient])
        lps = s + i * 0.7 * row + j * 0.9 * col
        np.testing.assert_allclose(raw.affine @ [i, j, k, 1], LPS_TO_RAS @ [*lps, 1], atol=1e-4)
        assert raw.array[i, j, k, 0] == ds.pixel_array[j, i] - 1024.0
    vol = load_series(paths[::-1])
    ref_array, ref_affine = _canonical_reference(raw.array, raw.affine)
    np.testing.assert_array_equal(vol.array[..., 0], ref_array)
    np.testing.assert_allclose(vol.affine, ref_affine, atol=1e-9)
    assert read_series_shape(paths) == vol.array.shape[:3]


def test_prepare_gives_the_same_arrays_for_dicom_and_nifti(tmp_path, rng):
    stored = _stored(rng, (10, 9, 8))
    write_series(tmp_path / "dicom" / "case_a", stored, directions=oblique_directions(),
                 pixel_spacing=(0.9, 0.7), step=1.5)
    raw = load_series(sorted((tmp_path / "dicom" / "case_a").iterdir()), canonical=False)
    write_nifti(tmp_path / "nifti" / "case_a.nii.gz", stored.astype(np.float32) - 1024.0,
                raw.affine, dtype=np.float32)
    assert detect_layout(tmp_path / "dicom") == "dicom"
    out = {}
    for kind in ("dicom", "nifti"):
        manifest = prepare_dataset(tmp_path / kind, tmp_path / f"out_{kind}", progress=False,
                                   preprocess={"normalize": "none", "spacing": (1.0, 1.0, 1.0)})
        (shard,) = manifest["shards"]
        (record,) = tf.data.TFRecordDataset(str(tmp_path / f"out_{kind}" / shard["path"]))
        out[kind] = (parse_example(record)["image"].numpy(), manifest["cases"][0])
    assert out["dicom"][1]["id"] == out["nifti"][1]["id"] == "case_a"
    np.testing.assert_array_equal(out["dicom"][0], out["nifti"][0])
    np.testing.assert_allclose(out["dicom"][1]["affine"], out["nifti"][1]["affine"], atol=1e-5)
    assert out["dicom"][1]["original_shape"] == out["nifti"][1]["original_shape"]
    assert len(out["dicom"][1]["sources"]) == 8 == len(out["dicom"][1]["sha256"])


# ----- broken series ---------------------------------------------------------------------------


def _broken(tmp_path, rng, how):
    """A good 8-slice series in `tmp_path/how`, then broken; returns (folder, culprit name)."""
    folder = tmp_path / how
    paths = write_series(folder, _stored(rng), seed=1)
    culprit = paths[4]
    if how == "missing":
        culprit.unlink()
        culprit = paths[5]  # the slice after the gap
    elif how == "orientation":
        tilted = oblique_directions(0.0, 0.0, 0.1)
        write_slice(culprit, rng.integers(0, 9, (5, 6)), position=[-100.0, -120.0, 40.0],
                    directions=tilted)
    elif how == "rows":
        write_slice(culprit, rng.integers(0, 9, (6, 6)), position=[-100.0, -120.0, 40.0])
    elif how == "duplicate":
        ds = pydicom.dcmread(culprit)
        ds.SOPInstanceUID = generate_uid()
        culprit = folder / "IM0100"
        ds.save_as(culprit)
    elif how == "truncated":
        data = culprit.read_bytes()
        culprit.write_bytes(data[: len(data) - 20])
    elif how == "not_dicom":
        culprit = folder / "notes"
        culprit.write_text("slice 4 was re-scanned\n")
    return folder, culprit.name


@pytest.mark.parametrize("how, problem", [
    ("missing", "unevenly spaced: 5 mm .* median gap 2.5 mm"),
    ("orientation", "orientations differ"),
    ("rows", "rows x columns differ"),
    ("duplicate", "at the same position"),
    ("truncated", "truncated or corrupt"),
    ("not_dicom", "not a DICOM file"),
])
def test_broken_series_name_the_file(tmp_path, rng, how, problem):
    folder, culprit = _broken(tmp_path, rng, how)
    source = discover(folder)
    assert source.layout == "dicom" and len(source.cases) == 1
    with pytest.raises(DataError, match=problem) as info:
        source.load(source.cases[0])
    assert culprit in str(info.value)


def test_prepare_skips_a_broken_series(tmp_path, rng):
    write_series(tmp_path / "data" / "good", _stored(rng))
    paths = write_series(tmp_path / "data" / "bad", _stored(rng), series_uid="1.2.3.5")
    paths[3].unlink()
    with pytest.raises(DataError, match="unevenly spaced"):
        prepare_dataset(tmp_path / "data", tmp_path / "fail", progress=False)
    manifest = prepare_dataset(tmp_path / "data", tmp_path / "out", progress=False,
                               on_error="skip")
    assert [c["id"] for c in manifest["cases"]] == ["good"]
    (skipped,) = manifest["skipped"]
    assert skipped["id"] == "bad" and paths[4].name in skipped["reason"]
    assert len(skipped["sources"]) == 7


def test_flat_folder_of_several_series_and_slices(tmp_path, rng):
    write_series(tmp_path, _stored(rng), series_uid="1.2.3.4", number=3,
                 description="CT abdomen/portal")
    for k in range(3):  # a second series in the same folder, other file names
        write_slice(tmp_path / f"loc{k}.dcm", rng.integers(0, 9, (4, 4)),
                    position=[0.0, 0.0, 10.0 * k], series_uid="1.2.3.9", number=1,
                    description="Scout", directions=AXIAL)
    (tmp_path / "README.txt").write_text("ignored: not a DICOM file name")
    source = discover(tmp_path)
    assert [c.case_id for c in source.cases] == ["P01_s1_Scout", "P01_s3_CT_abdomen_portal"]
    assert source.load(source.cases[0]).image.shape == (4, 4, 3, 1)
    slices = discover(tmp_path, slice_axis=2)
    assert [c.case_id for c in slices.cases[:4]] == [
        "P01_s1_Scout/z000", "P01_s1_Scout/z001", "P01_s1_Scout/z002", "P01_s3_CT_abdomen_portal/z000"]
    assert len(slices.cases) == 3 + 8
    assert slices.load(slices.cases[-1]).image.shape == (6, 5, 1)


def test_detect_layout_prefers_nifti_and_names_dicom(tmp_path, rng):
    write_series(tmp_path / "a", _stored(rng))
    assert detect_layout(tmp_path) == "dicom"
    write_nifti(tmp_path / "b.nii.gz", np.zeros((3, 3, 3), np.float32))
    assert detect_layout(tmp_path) == "folder"
    shutil.rmtree(tmp_path / "a")
    (tmp_path / "b.nii.gz").unlink()
    (tmp_path / "IM0001").write_bytes(b"\0" * 200)  # a DICOM-like name without the preamble
    with pytest.raises(DataError, match="unknown dataset layout"):
        detect_layout(tmp_path)


def test_gantry_tilt_keeps_its_geometry_as_a_sheared_affine(tmp_path, rng):
    stored = _stored(rng, (6, 5, 5))
    origin = np.array([-50.0, -60.0, 10.0])
    tilt = np.array([0.0, 0.4, 2.0])  # each slice 2 mm up and 0.4 mm back (a tilted gantry)
    for k in range(5):
        write_slice(tmp_path / f"{k}.dcm", stored[:, :, k].T, position=origin + k * tilt)
    raw = load_series(sorted(tmp_path.iterdir()), canonical=False)
    np.testing.assert_allclose(raw.affine[:3, 2], [0.0, -0.4, 2.0], atol=1e-6)
    np.testing.assert_allclose(raw.affine @ [3, 2, 4, 1],
                               [*(LPS_TO_RAS[:3, :3] @ (origin + 4 * tilt + [3 * 0.6, 2 * 0.8, 0])),
                                1], atol=1e-5)
    assert raw.spacing[2] == pytest.approx(np.hypot(0.4, 2.0))


def test_a_degenerate_orientation_is_named(tmp_path, rng):
    stored = _stored(rng, (4, 4, 3))
    write_series(tmp_path, stored, directions=((1.0, 0.0, 0.0), (1.0, 0.0, 0.0)))
    with pytest.raises(DataError, match="not two orthogonal unit vectors"):
        load_series(sorted(tmp_path.iterdir()))
