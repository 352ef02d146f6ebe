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
from ssl3d_keras.errors import ConfigError, DataError
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


# ----- untrusted headers: geometry, size caps, gzip streams, one-line errors ------------------


def _edit_header(path, **fields):
    """Rewrite header fields of a plain `.nii` in place (values nibabel's setters would refuse)."""
    blob = bytearray(open(path, "rb").read())
    header = np.frombuffer(bytes(blob[:348]), dtype=nib.nifti1.header_dtype).copy()
    for key, value in fields.items():
        key, _, index = key.partition("__")
        if index:
            header[key][0][int(index)] = value
        else:
            header[key] = value
    blob[:348] = header.tobytes()
    open(path, "wb").write(bytes(blob))
    return path


BAD_GEOMETRY = {
    "sform_nan": dict(sform_code=1, srow_x__1=np.nan),
    "sform_inf": dict(sform_code=1, srow_z__3=np.inf),
    "sform_zero": dict(sform_code=1, srow_x=[0, 0, 0, 0], srow_y=[0, 0, 0, 0],
                       srow_z=[0, 0, 0, 0]),
    "sform_rank2": dict(sform_code=1, srow_x=[1, 1, 0, 0], srow_y=[1, 1, 0, 0],
                        srow_z=[0, 0, 1, 0]),
    "qform_nan_quaternion": dict(sform_code=0, qform_code=1, quatern_b=np.nan),
    "pixdim_nan_no_codes": dict(sform_code=0, qform_code=0, pixdim__2=np.nan),
    "pixdim_zero_qform": dict(sform_code=0, qform_code=1, pixdim__1=0.0),
    "voxel_1e-30_mm": dict(sform_code=1, srow_x=[1e-30, 0, 0, 0], srow_y=[0, 1, 0, 0],
                           srow_z=[0, 0, 1, 0]),
    "pixdim_1e5_no_sform": dict(sform_code=0, qform_code=0, pixdim__1=1e5),
}


@pytest.mark.parametrize("case", sorted(BAD_GEOMETRY))
def test_non_finite_singular_or_absurd_geometry_is_one_data_error(tmp_path, rng, case, capfd):
    path = write_nifti(tmp_path / f"{case}.nii", rng.normal(size=(4, 5, 6)), dtype=np.float32)
    _edit_header(path, **BAD_GEOMETRY[case])
    for reader in (load_nifti, load_label, read_header_shape):
        with pytest.raises(DataError) as e:
            reader(path)
        _one_line_error(e, f"{case}.nii", "affine" if "1e" not in case else "voxel sizes")
    # No LinAlgError/OrientationError traceback, and none of nibabel's log lines either.
    assert capfd.readouterr().err == ""


def test_spacing_comes_from_the_affine_used_and_pixdim_disagreement_warns(tmp_path, rng):
    data = rng.normal(size=(4, 5, 6)).astype(np.float32)
    path = write_nifti(tmp_path / "pix.nii", data, np.diag([1.0, 1.0, 1.0, 1.0]))
    _edit_header(path, sform_code=1, pixdim__1=2.0, pixdim__2=2.0, pixdim__3=2.0)
    with pytest.warns(UserWarning) as caught:
        vol = load_nifti(path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"{path}: pixdim (2, 2, 2)") and "(1, 1, 1)" in message
    assert "\n" not in message
    assert vol.spacing == (1.0, 1.0, 1.0)
    # After reorientation too: the spacing is the column norms of the affine returned.
    path = write_nifti(tmp_path / "perm.nii", data, np.array(
        [[0, 2.0, 0, 0], [0, 0, 3.0, 0], [-4.0, 0, 0, 0], [0, 0, 0, 1]]))
    _edit_header(path, pixdim__1=9.0)
    with pytest.warns(UserWarning, match="pixdim"):
        vol = load_nifti(path)
    norms = np.sqrt((vol.affine[:3, :3] ** 2).sum(axis=0))
    np.testing.assert_allclose(vol.spacing, norms)
    assert vol.spacing == (2.0, 3.0, 4.0)


@pytest.mark.parametrize("name", NIBABEL_FILES)
def test_consistent_real_files_give_no_warning(nibabel_data, name, recwarn):
    load_nifti(os.path.join(nibabel_data, name))
    assert [str(w.message) for w in recwarn] == []


def test_per_volume_cap_from_argument_and_environment(tmp_path, rng, monkeypatch):
    path = write_nifti(tmp_path / "a.nii", rng.normal(size=(6, 7, 8)), dtype=np.float32)
    assert load_nifti(path).array.shape == (6, 7, 8, 1)
    with pytest.raises(DataError) as e:
        load_nifti(path, max_bytes=1000)
    _one_line_error(e, "a.nii", "1344 bytes", "cap of 1000 bytes", "SSL3D_MAX_VOLUME_BYTES")
    monkeypatch.setenv("SSL3D_MAX_VOLUME_BYTES", "1000")
    for reader in (load_nifti, load_label, read_header_shape):
        with pytest.raises(DataError, match="cap"):
            reader(path)
    monkeypatch.setenv("SSL3D_MAX_VOLUME_BYTES", "lots")
    with pytest.raises(ConfigError, match="SSL3D_MAX_VOLUME_BYTES"):
        load_nifti(path)
    # uint8 on disk is counted as the float32 array it becomes: 4 bytes a voxel.
    small = write_nifti(tmp_path / "u8.nii", np.ones((10, 10, 10), np.uint8), dtype=np.uint8)
    monkeypatch.delenv("SSL3D_MAX_VOLUME_BYTES")
    load_nifti(small, max_bytes=4000)
    with pytest.raises(DataError, match="4000 bytes in memory"):
        load_nifti(small, max_bytes=3999)


def test_nifti2_dims_overflowing_int64_are_a_data_error(tmp_path, rng):
    path = write_nifti(tmp_path / "n2.nii", rng.normal(size=(4, 4, 4)), dtype=np.float32,
                       nifti2=True)
    blob = bytearray(open(path, "rb").read())
    header = np.frombuffer(bytes(blob[:540]), dtype=nib.nifti2.header_dtype).copy()
    header["dim"][0][1:4] = 2**40  # product 2**120: wraps around in int64
    blob[:540] = header.tobytes()
    open(path, "wb").write(bytes(blob))
    with pytest.raises(DataError) as e:
        load_nifti(path)
    _one_line_error(e, "n2.nii", "cap")


def _peak_rss_mb(code):
    """Run `code` in a fresh interpreter; its printed result and peak resident memory (MB)."""
    import subprocess
    import sys

    script = ("import json\nfrom ssl3d_keras.benchmark.memory import peak_rss_mb\n" + code +
              "\nprint(json.dumps([result, peak_rss_mb()]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                         timeout=120, check=True).stdout
    import json

    result, rss_mb = json.loads(out.strip().splitlines()[-1])
    return result, rss_mb


def test_gzip_isize_spoof_and_bomb_are_refused_with_flat_memory(tmp_path):
    import importlib.util

    tool_path = os.path.join(os.path.dirname(__file__), "..", "..", "tools",
                             "make_fuzz_corpus.py")
    spec = importlib.util.spec_from_file_location("make_fuzz_corpus", tool_path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    # A few KB declaring 4 GiB + 4 MiB whose gzip trailer agrees modulo 2**32.
    spoof = tmp_path / "spoof.nii.gz"
    spoof.write_bytes(tool.isize_spoof())
    declared = 352 + 2048 * 2048 * 1025
    assert int.from_bytes(spoof.read_bytes()[-4:], "little") == declared % 2**32
    bomb = tool.gzip_bomb(tmp_path / "bomb.nii.gz", 64 << 20)  # 64 MiB of zeros, 65 KB
    base = ("import time\nfrom ssl3d_keras.data.nifti import load_nifti\n"
            "from ssl3d_keras.errors import DataError\nt = time.perf_counter()\n"
            "try:\n    load_nifti({path!r}, max_bytes={cap})\n    result = 'loaded'\n"
            "except DataError as e:\n    result = str(e)\n"
            "result = [result, time.perf_counter() - t]")
    # The default cap refuses the spoof from its header; with the cap lifted, counting does.
    (text, _), rss = _peak_rss_mb(base.format(path=str(spoof), cap=None))
    assert "cap" in text and rss < 250
    (text, _), rss = _peak_rss_mb(base.format(path=str(spoof), cap=2**35))
    assert "the file holds 4194656 bytes (uncompressed)" in text and rss < 250
    (text, seconds), rss = _peak_rss_mb(base.format(path=str(bomb), cap=None))
    assert "holds more than 416 bytes" in text and rss < 250 and seconds < 5.0


def test_gzip_crc_is_verified(tmp_path, rng):
    path = write_nifti(tmp_path / "a.nii.gz", rng.normal(size=(6, 6, 6)), dtype=np.float32)
    blob = bytearray(open(path, "rb").read())
    blob[-8] ^= 0xFF  # the CRC32 of the trailer: the data themselves decompress fine
    (tmp_path / "crc.nii.gz").write_bytes(bytes(blob))
    with pytest.raises(DataError) as e:
        load_nifti(tmp_path / "crc.nii.gz")
    _one_line_error(e, "crc.nii.gz", "gzip stream is truncated or corrupt", "CRC")


def test_nibabel_log_lines_and_warnings_are_silenced(tmp_path, rng, capfd, caplog):
    path = write_nifti(tmp_path / "odd.nii", rng.normal(size=(4, 4, 4)), dtype=np.float32)
    _edit_header(path, datatype=9999, sform_code=99)
    with warnings_as_list() as caught, pytest.raises(DataError) as e:
        load_nifti(path)
    _one_line_error(e, "odd.nii", "not a readable NIfTI")
    assert caught == [] and caplog.records == [] and capfd.readouterr().err == ""


class warnings_as_list:
    def __enter__(self):
        import warnings

        self._context = warnings.catch_warnings(record=True)
        caught = self._context.__enter__()
        warnings.simplefilter("always")
        return caught

    def __exit__(self, *exc):
        return self._context.__exit__(*exc)


def test_label_in_another_voxel_order_on_the_same_grid_is_reoriented(tmp_path, rng):
    """An in-plane rotation of exactly 45 degrees: each file's closest canonical order differs."""
    from ssl3d_keras.data.layouts import discover
    from tests.data.helpers_nifti import write_decathlon

    c = np.sqrt(0.5)
    affine = np.array([[c, -c, 0, -10.0], [c, c, 0, -20.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1]])
    root = write_decathlon(tmp_path / "msd", 1, rng, size=12, channels=1, affine=affine)
    label_path = root / "labelsTr" / "case_000.nii.gz"
    label = np.asarray(nib.load(label_path).dataobj)
    label[0, 1, 2] = 2  # break the symmetry of the blob, so a wrong transpose shows
    write_nifti(label_path, label, affine)
    expected = load_label(label_path)[0]
    # The same label stored with axes 0 and 1 swapped, on the same world grid.
    swap = np.array([[0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    write_nifti(label_path, label.transpose(1, 0, 2), affine @ swap)
    assert not np.allclose(load_label(label_path)[1], load_nifti(root / "imagesTr" /
                                                                   "case_000.nii.gz").affine)
    source = discover(root)
    case = source.load(source.cases[0])
    np.testing.assert_array_equal(case.label, expected)
    # A label really off the image's grid is still refused.
    shifted = affine @ swap
    shifted[0, 3] += 31.0
    write_nifti(label_path, label.transpose(1, 0, 2), shifted)
    with pytest.raises(DataError) as e:
        source.load(source.cases[0])
    _one_line_error(e, "case_000", "affines differ", "31")


def test_match_grid_reorients_flips_and_permutations(rng):
    from ssl3d_keras.data.nifti import match_grid

    array = rng.normal(size=(3, 4, 5))
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    # b stores axis 0 flipped and axes 1, 2 swapped; voxel (i, j, k) of a is b[2 - i, k, j].
    to_a = np.array([[-1.0, 0, 0, 2], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    b = array[::-1].transpose(0, 2, 1)
    np.testing.assert_array_equal(match_grid("c", (3, 4, 5), affine, b, affine @ to_a), array)
    np.testing.assert_array_equal(match_grid("c", (3, 4, 5), affine, array, affine), array)
    with pytest.raises(DataError, match="shapes differ"):
        match_grid("c", (3, 4, 5), affine, b, affine)
