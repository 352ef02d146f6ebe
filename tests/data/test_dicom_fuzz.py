"""Hostile and broken DICOM series: every one loads correctly or is one clear `DataError`.

Real series (pydicom's CT5N, its MR and CT images as short series in four transfer syntaxes)
and a series written here are copied and mutated, deterministically, into one folder per
case: bit flips in the header and in the pixel data, files cut short, tags at extremes or
missing, broken transfer syntaxes and pixel data, and series with foreign, duplicate,
shuffled or missing slices. A child process with an address-space limit
(tests/data/dicom_fuzz_worker.py) reads each folder with `find_series`, `load_series` and
`read_series_shape`: no traceback, no hang, no crash, no library noise, bounded memory.
`prepare_dataset(layout="dicom", on_error="skip")` over the cases reports each bad series as
skipped and carries on. The hypothesis fuzzer (slow) edits random tags and bytes.
"""

import collections
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement, RawDataElement

from ssl3d_keras.data import dicom, nifti
from ssl3d_keras.data.prepare import prepare_dataset
from ssl3d_keras.errors import DataError
from tests.data.dicom_fuzz_worker import FAILURES, READERS, run_folders
from tests.data.helpers_dicom import DICOMDIR_TESTS, PYDICOM_FILES, oblique_directions, write_series

MAX_SECONDS = 5.0  # per folder, all three readers
MAX_RSS_MB = 300   # the child's peak over the whole run (numpy + nibabel + pydicom are ~70)
# (name, pydicom test file, slices): single images made into short series.
SINGLE_FILE_BASES = (("mr", "MR_small.dcm", 3), ("mr_bigendian", "MR_small_bigendian.dcm", 2),
                     ("mr_implicit", "MR_small_implicit.dcm", 2), ("mr_rle", "MR_small_RLE.dcm", 2),
                     ("ct_small", "CT_small.dcm", 2))
SYNTH_UID = b"1.2.3.4\0"  # the SeriesInstanceUID of the written series, as stored
_PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # little, big endian

# (tag, keyword or (group, element), VR, raw value or None to delete), set in every file.
TAG_EDITS = [
    ("rows_0", "Rows", "US", 0), ("rows_huge", "Rows", "US", 65535),
    ("rows_negative", "Rows", "SS", -1), ("columns_0", "Columns", "US", 0),
    ("columns_huge", "Columns", "US", 65535), ("columns_negative", "Columns", "SS", -2),
    ("rows_missing", "Rows", None, None), ("bits_allocated_0", "BitsAllocated", "US", 0),
    ("bits_allocated_7", "BitsAllocated", "US", 7), ("bits_allocated_64", "BitsAllocated", "US", 64),
    ("bits_allocated_1", "BitsAllocated", "US", 1), ("bits_allocated_missing", "BitsAllocated", None, None),
    ("bits_stored_0", "BitsStored", "US", 0), ("bits_stored_17", "BitsStored", "US", 17),
    ("high_bit_99", "HighBit", "US", 99), ("pixel_representation_2", "PixelRepresentation", "US", 2),
    ("pixel_representation_flipped", "PixelRepresentation", "US", 0),
    ("pixel_representation_missing", "PixelRepresentation", None, None),
    ("slope_nan", "RescaleSlope", "DS", b"NaN"), ("slope_inf", "RescaleSlope", "DS", b"Inf"),
    ("slope_minus_inf", "RescaleSlope", "DS", b"-Inf"), ("slope_1e38", "RescaleSlope", "DS", b"1e38"),
    ("slope_1e300", "RescaleSlope", "DS", b"1e300"), ("slope_0", "RescaleSlope", "DS", b"0"),
    ("slope_negative", "RescaleSlope", "DS", b"-2.5"), ("slope_text", "RescaleSlope", "DS", b"abc"),
    ("slope_two_values", "RescaleSlope", "DS", b"1\\2"), ("slope_empty", "RescaleSlope", "DS", b""),
    ("intercept_nan", "RescaleIntercept", "DS", b"NaN"),
    ("intercept_1e38", "RescaleIntercept", "DS", b"1e38"),
    ("intercept_missing", "RescaleIntercept", None, None),
    ("spacing_0", "PixelSpacing", "DS", b"0\\0"), ("spacing_negative", "PixelSpacing", "DS", b"-1\\-1"),
    ("spacing_nan", "PixelSpacing", "DS", b"NaN\\NaN"), ("spacing_inf", "PixelSpacing", "DS", b"Inf\\1"),
    ("spacing_1e-30", "PixelSpacing", "DS", b"1e-30\\1e-30"),
    ("spacing_1e30", "PixelSpacing", "DS", b"1e30\\1e30"), ("spacing_one_value", "PixelSpacing", "DS", b"0.5"),
    ("spacing_three_values", "PixelSpacing", "DS", b"1\\1\\1"),
    ("spacing_text", "PixelSpacing", "DS", b"a\\b"), ("spacing_empty", "PixelSpacing", "DS", b""),
    ("spacing_missing", "PixelSpacing", None, None),
    ("position_nan", "ImagePositionPatient", "DS", b"NaN\\0\\0"),
    ("position_missing", "ImagePositionPatient", None, None),
    ("position_1e30", "ImagePositionPatient", "DS", b"1e30\\1e30\\1e30"),
    ("position_two_values", "ImagePositionPatient", "DS", b"0\\0"),
    ("orientation_degenerate", "ImageOrientationPatient", "DS", b"1\\0\\0\\1\\0\\0"),
    ("orientation_nan", "ImageOrientationPatient", "DS", b"NaN\\0\\0\\0\\1\\0"),
    ("orientation_non_unit", "ImageOrientationPatient", "DS", b"2\\0\\0\\0\\2\\0"),
    ("orientation_zero", "ImageOrientationPatient", "DS", b"0\\0\\0\\0\\0\\0"),
    ("orientation_five_values", "ImageOrientationPatient", "DS", b"1\\0\\0\\0\\1"),
    ("orientation_missing", "ImageOrientationPatient", None, None),
    ("frames_huge", "NumberOfFrames", "IS", b"2147483647"), ("frames_0", "NumberOfFrames", "IS", b"0"),
    ("frames_negative", "NumberOfFrames", "IS", b"-1"), ("frames_2", "NumberOfFrames", "IS", b"2"),
    ("frames_text", "NumberOfFrames", "IS", b"many"), ("samples_3", "SamplesPerPixel", "US", 3),
    ("samples_0", "SamplesPerPixel", "US", 0), ("photometric_rgb", "PhotometricInterpretation", "CS", b"RGB"),
    ("photometric_palette", "PhotometricInterpretation", "CS", b"PALETTE COLOR"),
    ("photometric_monochrome1", "PhotometricInterpretation", "CS", b"MONOCHROME1"),
    ("photometric_missing", "PhotometricInterpretation", None, None),
    ("series_uid_missing", "SeriesInstanceUID", None, None),
    ("pixel_data_missing", "PixelData", None, None),
]
# (tag, TransferSyntaxUID or None to delete) in every file's meta header; the data is unchanged.
SYNTAX_EDITS = [("syntax_unknown", "1.2.3.4.5.6"), ("syntax_jpeg_baseline", "1.2.840.10008.1.2.4.50"),
                ("syntax_jpeg2000", "1.2.840.10008.1.2.4.90"), ("syntax_rle", "1.2.840.10008.1.2.5"),
                ("syntax_deflated", "1.2.840.10008.1.2.1.99"), ("syntax_explicit_big", "1.2.840.10008.1.2.2"),
                ("syntax_implicit", "1.2.840.10008.1.2"), ("syntax_missing", None)]


def write_bases(root):
    """The unmutated series, one folder each under `root`; returns `{name: folder}`."""
    root = Path(root)
    bases = {"ct5n": root / "ct5n", "synth": root / "synth"}
    shutil.copytree(DICOMDIR_TESTS / "98892001" / "CT5N", bases["ct5n"])
    stored = np.random.default_rng(7).integers(-200, 1500, size=(6, 5, 8)).astype(np.int16)
    for k, path in enumerate(write_series(bases["synth"], stored, directions=oblique_directions(),
                                          pixel_spacing=(0.9, 0.7), step=1.5)):
        def fixed_uid(ds, k=k):  # the writer draws random UIDs: same bytes on every run
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.99.{k}"

        _quiet_rewrite(path, fixed_uid)
    for name, filename, count in SINGLE_FILE_BASES:
        ds = pydicom.dcmread(PYDICOM_FILES / filename)
        origin = np.array([float(v) for v in ds.ImagePositionPatient])
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.{len(bases)}"
        for k in range(count):
            ds.ImagePositionPatient = [f"{v:.4f}" for v in origin + [0, 0, 2.5 * k]]
            ds.SOPInstanceUID = f"{ds.SeriesInstanceUID}.{k}"
            (root / name).mkdir(parents=True, exist_ok=True)
            ds.save_as(root / name / f"IM{k:04d}.dcm")
        bases[name] = root / name
    return bases


def mutations(base, folder, seed):
    """`(kind, tag, edit)` for one base series; `edit(case_folder)` breaks a copy of it."""
    rng = np.random.default_rng(seed)
    files = sorted(p.name for p in Path(folder).iterdir())
    target = files[len(files) // 2]
    blob = (Path(folder) / target).read_bytes()
    pixel_at = max(blob.rfind(tag) for tag in _PIXEL_DATA_TAGS)
    out = []

    def on_target(data):
        return lambda case: (case / target).write_bytes(data)

    for n in range(12):
        at = int(rng.integers(132, pixel_at))
        out.append(("bitflip", f"header_{n}_{at}", on_target(_flip(blob, at, rng))))
    for n in range(6):
        at = int(rng.integers(pixel_at + 12, len(blob)))
        out.append(("bitflip", f"pixels_{n}_{at}", on_target(_flip(blob, at, rng))))
    cuts = sorted({0, 64, 128, 132, 140, pixel_at // 2, pixel_at - 2, pixel_at + 4, pixel_at + 10,
                   (pixel_at + len(blob)) // 2, len(blob) - 1})
    for at in cuts:
        out.append(("trunc", f"cut_{at}", on_target(blob[:at])))
    out.append(("trunc", "trailing_garbage", on_target(blob + bytes(range(256)) * 4)))
    out.append(("trunc", "file_twice", on_target(blob + blob)))
    for tag, keyword, vr, value in TAG_EDITS:
        out.append(("tag", tag, _edit_all(keyword, vr, value)))
    for tag, syntax in SYNTAX_EDITS:
        out.append(("syntax", tag, _edit_all_meta(syntax)))
    for tag, change in (("short_half", lambda d: d[: len(d) // 2]), ("short_1", lambda d: d[:-2]),
                        ("long_double", lambda d: d + d), ("long_2", lambda d: d + b"\0\0"),
                        ("empty", lambda d: b"")):
        out.append(("pixels", tag, _edit_pixel_data(change)))
    out.append(("huge", "rows_columns_65535", _edit_all(("Rows", "Columns"), "US", 65535)))
    out.append(("huge", "rows_columns_40000_frames", _edit_all(
        ("Rows", "Columns", "NumberOfFrames"), ("US", "US", "IS"), (40000, 40000, b"1"))))
    out.extend(("series", tag, edit) for tag, edit in _series_edits(files, target, seed))
    return out


def write_cases(root, *, seed=0, full=None):
    """Mutations of every base under `root/cases/<base>__<kind>__<tag>`; returns the folders.

    Bases in `full` (all when None) get every mutation, the others only the bit flips,
    truncations and series edits (the tag edits are the same for every base).
    """
    root = Path(root)
    bases = write_bases(root / "bases")
    folders = []
    for index, (name, folder) in enumerate(sorted(bases.items())):
        folders.append(folder)
        for kind, tag, edit in mutations(name, folder, seed + index):
            if full is not None and name not in full and kind not in ("bitflip", "trunc", "series"):
                continue
            case = root / "cases" / f"{name}__{kind}__{tag}"
            shutil.copytree(folder, case)
            edit(case)
            folders.append(case)
    return folders


def _flip(blob, at, rng):
    data = bytearray(blob)
    data[at] ^= 1 << int(rng.integers(0, 8))
    return bytes(data)


def _quiet_rewrite(path, change):
    """Read `path`, apply `change(ds)`, write it back as is (pydicom's warnings kept quiet)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path, enforce_file_format=False)


def _edit_all(keywords, vrs, values):
    keywords = (keywords,) if isinstance(keywords, str) else keywords
    vrs = vrs if isinstance(vrs, tuple) else (vrs,) * len(keywords)
    values = values if isinstance(values, tuple) else (values,) * len(keywords)

    def change(ds):
        for keyword, vr, value in zip(keywords, vrs, values, strict=True):
            tag = pydicom.datadict.tag_for_keyword(keyword)
            if value is None:
                if tag in ds:
                    del ds[tag]
            elif isinstance(value, bytes):  # raw text, written as is (no float parsing)
                value = value + b" " * (len(value) % 2)
                implicit, little = ds.original_encoding
                ds[tag] = RawDataElement(tag, None if implicit else vr, len(value), value, 0,
                                         implicit, little)
            else:
                ds[tag] = DataElement(tag, vr, value)

    return lambda case: [_quiet_rewrite(p, change) for p in sorted(case.iterdir())]


def _edit_all_meta(syntax):
    def change(ds):
        if syntax is None:
            del ds.file_meta.TransferSyntaxUID
        else:
            ds.file_meta.TransferSyntaxUID = syntax

    def edit(case):
        # Write with the file's own encoding, then swap the UID in the meta header only.
        for path in sorted(case.iterdir()):
            _quiet_rewrite(path, change) if syntax is None else _swap_meta_syntax(path, syntax)

    return edit


def _swap_meta_syntax(path, syntax):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    old = str(ds.file_meta.TransferSyntaxUID).encode()
    old_padded = old + b"\0" * (len(old) % 2)
    new = syntax.encode()
    new = new + b"\0" * (len(new) % 2)
    data = Path(path).read_bytes()
    # The meta header is explicit VR little endian: (0002,0010) UI, then a 2-byte length.
    head = b"\x02\x00\x10\x00UI" + len(old_padded).to_bytes(2, "little") + old_padded
    at = data.index(head)
    swapped = b"\x02\x00\x10\x00UI" + len(new).to_bytes(2, "little") + new
    data = data[:at] + swapped + data[at + len(head):]
    # Keep the meta group length (0002,0000) true, so only the syntax is wrong.
    length_at = data.index(b"\x02\x00\x00\x00UL\x04\x00")
    old_length = int.from_bytes(data[length_at + 8:length_at + 12], "little")
    new_length = (old_length + len(swapped) - len(head)).to_bytes(4, "little")
    Path(path).write_bytes(data[:length_at + 8] + new_length + data[length_at + 12:])


def _edit_pixel_data(change):
    def edit(ds):
        if ds.file_meta.TransferSyntaxUID.is_compressed:  # change the frame, keep the items
            from pydicom.encaps import encapsulate, generate_frames

            (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
            ds.PixelData = encapsulate([change(frame) or b"\0\0"])
        else:
            ds.PixelData = change(ds.PixelData)

    return lambda case: [_quiet_rewrite(p, edit) for p in sorted(case.iterdir())]


def _series_edits(files, target, seed):
    rng = np.random.default_rng(seed)

    def foreign_uid(case):
        _quiet_rewrite(case / target, lambda ds: setattr(ds, "SeriesInstanceUID",
                                                         "1.2.826.0.1.3680043.99"))

    def duplicate(case):
        shutil.copy(case / target, case / "zz_duplicate.dcm")

    def shuffled(case):
        order = rng.permutation(len(files))
        for name in files:
            os.rename(case / name, case / f"tmp_{name}")
        for k, name in zip(order, files, strict=True):
            os.rename(case / f"tmp_{name}", case / f"{k:04d}.dcm")

    def remove(which):
        return lambda case: (case / which).unlink()

    def positions_swapped(case):
        a, b = sorted(case.iterdir())[:2]
        pa = pydicom.dcmread(a).ImagePositionPatient
        pb = pydicom.dcmread(b).ImagePositionPatient
        _quiet_rewrite(a, lambda ds: setattr(ds, "ImagePositionPatient", pb))
        _quiet_rewrite(b, lambda ds: setattr(ds, "ImagePositionPatient", pa))

    def position_far(case):
        _quiet_rewrite(case / target, lambda ds: setattr(ds, "ImagePositionPatient",
                                                         ["1e30", "0", "0"]))

    def text_file(case):
        (case / "IM9999").write_text("slice 4 was re-scanned\n")

    def empty_file(case):
        (case / "IM9998.dcm").write_bytes(b"")

    def preamble_only(case):
        (case / "IM9997.dcm").write_bytes(b"\0" * 128 + b"DICM")

    def other_series(case):
        shutil.copy(DICOMDIR_TESTS / "98892001" / "CT5N" / "2062", case / "zz_other.dcm")

    def subfolders(case):
        (case / "b").mkdir()
        for name in files[len(files) // 2:]:
            os.rename(case / name, case / "b" / name)

    return [("foreign_uid", foreign_uid), ("duplicate", duplicate), ("shuffled", shuffled),
            ("missing_middle", remove(target)), ("missing_first", remove(files[0])),
            ("missing_last", remove(files[-1])), ("positions_swapped", positions_swapped),
            ("position_far", position_far), ("text_file", text_file), ("empty_file", empty_file),
            ("preamble_only", preamble_only), ("other_series", other_series),
            ("subfolders", subfolders)]


def _kind(path):
    parts = Path(path).name.split("__")
    return parts[1] if len(parts) > 2 else "base"


def _check(results):
    failures = [(Path(r["path"]).name, {k: r[k] for k in READERS}, r["detail"])
                for r in results if any(r[k] in FAILURES for k in READERS)]
    assert not failures, failures[:5]
    slow = [(Path(r["path"]).name, r["seconds"]) for r in results if r["seconds"] > MAX_SECONDS]
    assert not slow, slow
    assert max(r["maxrss_mb"] for r in results) < MAX_RSS_MB


# Bases that get every mutation in the default suite (the others: bit flips, cuts, series
# edits): explicit little endian (a CT series written here), RLE and big endian (real MR).
DEFAULT_FULL = ("mr_bigendian", "mr_rle", "synth")
# Edits that change nothing a reader should see: if they load, they load the base's volume.
HARMLESS = ("series__shuffled", "series__subfolders", "trunc__trailing_garbage",
            "pixels__long_2", "tag__high_bit_99", "tag__frames_0", "tag__photometric_monochrome1")


@pytest.fixture(scope="module")
def fuzz_cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom_fuzz")
    return root, write_cases(root, full=DEFAULT_FULL)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return write_bases(tmp_path_factory.mktemp("dicom_bases"))


def test_every_case_loads_or_is_one_clear_error(fuzz_cases):
    _, folders = fuzz_cases
    results = run_folders(folders)
    _check(results)
    assert len(results) > 500
    table = outcome_table(results)
    assert table["base"] == {"loaded": 7}
    # Every class is refused somewhere, and the classes with harmless edits load somewhere.
    for kind in ("bitflip", "trunc", "tag", "syntax", "pixels", "series"):
        assert table[kind]["error"] > 0, (kind, table[kind])
    for kind in ("bitflip", "tag", "series"):
        assert table[kind]["loaded"] > 0, (kind, table[kind])
    assert table["huge"] == {"error": 2 * len(DEFAULT_FULL)}
    by_name = {Path(r["path"]).name: r for r in results}
    digests = {name: by_name[name]["digests"] for name in by_name if "__" not in name}
    for name, r in by_name.items():
        base, _, edit = name.partition("__")
        if edit in HARMLESS and r["load_series"] == "loaded":
            assert set(r["digests"]) == set(digests[base]), name
        if edit.startswith("huge__"):
            assert all("per-volume cap" in r["detail"][k] for k in READERS[1:]), r["detail"]
    for base in DEFAULT_FULL:
        for edit in ("tag__slope_nan", "tag__slope_0", "tag__slope_1e38", "tag__intercept_1e38",
                     "tag__spacing_1e30", "tag__orientation_degenerate", "tag__rows_negative",
                     "tag__photometric_palette", "syntax__syntax_unknown", "pixels__short_1",
                     "series__foreign_uid", "series__duplicate"):
            assert by_name[f"{base}__{edit}"]["load_series"] == "error", (base, edit)
        for edit in ("series__shuffled", "tag__frames_0", "pixels__long_2"):
            assert by_name[f"{base}__{edit}"]["load_series"] == "loaded", (base, edit)


def test_prepare_skips_each_bad_series_and_carries_on(fuzz_cases, tmp_path):
    root, _ = fuzz_cases
    raw = tmp_path / "raw"
    for n, folder in enumerate(sorted((root / "cases").glob("synth__*"))):
        # A series is its SeriesInstanceUID wherever its files are: give each copy its own.
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                target = raw / folder.name / path.relative_to(folder)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes().replace(SYNTH_UID, f"1.9.{100 + n}\0".encode()))
    expected = dicom.find_series(raw)
    manifest = prepare_dataset(raw, tmp_path / "out", layout="dicom", on_error="skip",
                               progress=False)
    assert len(manifest["cases"]) + len(manifest["skipped"]) == len(expected)
    assert len(manifest["cases"]) > 15 and len(manifest["skipped"]) > 80
    files = dict(expected)
    for entry in manifest["skipped"]:
        assert "\n" not in entry["reason"], entry
        assert any(f in entry["reason"] for f in files[entry["id"]]), entry
    skipped = {e["id"] for e in manifest["skipped"]}
    assert {"synth__tag__slope_nan", "synth__huge__rows_columns_65535",
            "synth__syntax__syntax_unknown"} <= skipped
    text = (tmp_path / "out" / "manifest.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"manifest holds {c}"))
    for case in manifest["cases"]:
        assert all(np.isfinite(case["spacing"])) and min(case["spacing"]) > 0


# (base, mutation, problem, what it was before): each fix of ssl3d_keras/data/dicom.py.
FIXED = [
    ("synth", "tag__rows_negative", "Rows and Columns must be positive integers",
     "ValueError: negative dimensions"),
    ("synth", "tag__slope_nan", "RescaleSlope must be a finite number", "NaN voxels"),
    ("synth", "tag__slope_inf", "RescaleSlope must be a finite number", "Inf voxels"),
    ("synth", "tag__intercept_nan", "RescaleIntercept must be a finite number", "NaN voxels"),
    ("synth", "tag__slope_0", "RescaleSlope must be a finite number, not 0",
     "read as slope 1"),
    ("synth", "tag__slope_text", "malformed RescaleSlope", "ValueError"),
    ("synth", "tag__slope_two_values", "malformed RescaleSlope", "TypeError"),
    ("synth", "tag__slope_1e38", "do not fit float32", "Inf voxels, numpy's warning"),
    ("synth", "tag__intercept_1e38", "do not fit float32", "a flat image of 1e38"),
    ("synth", "tag__spacing_1e-30", "PixelSpacing must be within", "1e-30 mm voxels"),
    ("synth", "tag__spacing_1e30", "PixelSpacing must be within", "1e30 mm voxels"),
    ("mr_implicit", "series__position_far", "step between slices", "OrientationError"),
    ("synth", "tag__frames_text", "malformed NumberOfFrames", "ValueError"),
    ("synth", "syntax__syntax_unknown", "unknown transfer syntax", "ValueError"),
    ("synth", "tag__photometric_palette", "PhotometricInterpretation PALETTE COLOR",
     "palette indices read as intensities"),
    ("synth", "huge__rows_columns_65535", "above the per-volume cap", "MemoryError"),
    ("mr_rle", "syntax__syntax_jpeg_baseline", "truncated or corrupt",
     "'install pylibjpeg' and PIL's log line"),
    ("mr_rle", "pixels__short_half", "truncated or corrupt", "pydicom's log line"),
]


def _mutated(bases, tmp_path, base, name):
    (edit,) = [e for kind, tag, e in mutations(base, bases[base], 0) if f"{kind}__{tag}" == name]
    case = tmp_path / name
    shutil.copytree(bases[base], case)
    edit(case)
    return sorted(str(p) for p in case.iterdir())


@pytest.mark.parametrize("base, name, problem, before", FIXED, ids=[f[1] for f in FIXED])
def test_fixed_case_is_one_quiet_data_error(bases, tmp_path, caplog, base, name, problem,
                                            before):
    files = _mutated(bases, tmp_path, base, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match=problem) as info:
            dicom.load_series(files)
    assert info.value.source in files
    assert not caught and not caplog.records, (caught, caplog.records)


@pytest.mark.parametrize("name, problem", [
    ("tag__orientation_degenerate", "not two orthogonal unit vectors"),  # was ValueError
    ("tag__orientation_nan", "non-finite geometry"),  # was LinAlgError
    ("tag__orientation_five_values", "must hold 3, 6 and 2 values"),
    ("huge__rows_columns_65535", "above the per-volume cap"),  # was 65535 slice cases
])
def test_read_series_shape_checks_the_header_as_load_series(bases, tmp_path, name, problem):
    files = _mutated(bases, tmp_path, "synth", name)
    for reader in (dicom.read_series_shape, dicom.load_series):
        with pytest.raises(DataError, match=problem):
            reader(files)


def test_an_unknown_vr_in_a_geometry_tag_is_one_data_error(bases, tmp_path):
    """A flipped VR byte (DS -> DW) surfaces when the value is decoded, after the file reads."""
    case = tmp_path / "vr"
    shutil.copytree(bases["synth"], case)
    for path in sorted(case.iterdir()):  # (0020,0037) ImageOrientationPatient, explicit VR LE
        path.write_bytes(path.read_bytes().replace(b"\x20\x00\x37\x00DS", b"\x20\x00\x37\x00DW"))
    files = sorted(str(p) for p in case.iterdir())
    with pytest.raises(DataError, match="no readable slice geometry .*Unknown Value Repr"):
        dicom.read_series_shape(files)  # was NotImplementedError
    with pytest.raises(DataError, match="malformed header .*Unknown Value Repr"):
        dicom.load_series(files)


def test_repaired_values_load_quietly_and_equal_the_base(bases, tmp_path, caplog):
    reference = dicom.load_series(sorted(bases["mr_rle"].iterdir()))
    for name in ("tag__frames_0", "pixels__long_2", "tag__slope_empty"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            vol = dicom.load_series(_mutated(bases, tmp_path, "mr_rle", name))
        assert not caught and not caplog.records, (name, caught, caplog.records)
        np.testing.assert_array_equal(vol.array, reference.array)
        np.testing.assert_array_equal(vol.affine, reference.affine)


def test_volume_cap_is_the_nifti_one(bases, monkeypatch):
    files = sorted(bases["synth"].iterdir())  # 6 x 5 x 8 voxels: 960 bytes as float32
    assert dicom.load_series(files, max_bytes=960).array.shape == (6, 5, 8, 1)
    assert dicom.read_series_shape(files, max_bytes=960) == (6, 5, 8)
    with pytest.raises(DataError, match="8 slices of 5 x 6 pixels \\(960 bytes in memory\\), "
                       "above the per-volume cap of 959 bytes"):
        dicom.load_series(files, max_bytes=959)
    monkeypatch.setenv(nifti.MAX_BYTES_ENV, "959")
    for reader in (dicom.load_series, dicom.read_series_shape):
        with pytest.raises(DataError, match=nifti.MAX_BYTES_ENV):
            reader(files)


@pytest.mark.slow
def test_every_mutation_of_every_base(tmp_path):
    """The default test's cases plus the tag edits on the other four bases (875 folders)."""
    results = run_folders(write_cases(tmp_path))
    _check(results)
    assert len(results) == 875 and outcome_table(results)["base"] == {"loaded": 7}


# Tags the hypothesis fuzzer sets to random values (or deletes).
FUZZED_TAGS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
               "SamplesPerPixel", "PlanarConfiguration", "NumberOfFrames",
               "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept", "PixelSpacing",
               "ImagePositionPatient", "ImageOrientationPatient", "SliceThickness",
               "SeriesInstanceUID", "InstanceNumber")


@pytest.mark.slow
def test_hypothesis_tag_and_byte_fuzzer(tmp_path_factory):
    """Random tags at random values in one or every file, plus random bytes, for a long run."""
    from hypothesis import HealthCheck, given, settings  # the `test` extra
    from hypothesis import strategies as st

    from tests.data.dicom_fuzz_worker import classify

    bases = write_bases(tmp_path_factory.mktemp("bases"))
    folder = tmp_path_factory.mktemp("hypothesis")
    numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                        st.integers(-(2**40), 2**40), st.sampled_from([0, -1, 1, 65535, 2**31]))
    texts = st.one_of(
        st.lists(numbers, min_size=1, max_size=7).map(lambda v: "\\".join(f"{x:g}" if isinstance(
            x, float) else str(x) for x in v)),
        st.sampled_from(["", "MONOCHROME1", "RGB", "YBR_FULL", "abc", "1.2.3", "\\"]))
    edits = st.lists(st.tuples(st.sampled_from(FUZZED_TAGS),
                               st.one_of(st.none(), st.integers(-32768, 65535), texts)),
                     min_size=1, max_size=4)

    @settings(max_examples=int(os.environ.get("DICOM_FUZZ_EXAMPLES", "1000")), deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(base=st.sampled_from(sorted(bases)), edits=edits, every_file=st.booleans(),
           flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), max_size=3))
    def fuzz(base, edits, every_file, flips):
        case = folder / "case"
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(bases[base], case)
        files = sorted(case.iterdir())
        target = files[len(files) // 2]

        def change(ds):
            for keyword, value in edits:
                tag = pydicom.datadict.tag_for_keyword(keyword)
                vr = pydicom.datadict.dictionary_VR(tag)
                if value is None:
                    ds.pop(tag, None)
                elif vr in ("US", "SS"):
                    number = value if isinstance(value, int) else len(value)
                    ds[tag] = DataElement(tag, "US" if number >= 0 else "SS", number)
                else:
                    raw = str(value).encode()[:64]
                    raw += b" " * (len(raw) % 2)
                    implicit, little = ds.original_encoding
                    ds[tag] = RawDataElement(tag, None if implicit else vr, len(raw), raw, 0,
                                             implicit, little)

        for path in files if every_file else [target]:
            _quiet_rewrite(path, change)
        data = bytearray(target.read_bytes())
        for at, byte in flips:
            data[at % len(data)] = byte
        target.write_bytes(bytes(data))
        result = classify(case)
        bad = {k: result[k] for k in READERS if result[k] in FAILURES}
        assert not bad, (bad, result["detail"])
        assert result["seconds"] < MAX_SECONDS

    fuzz()


def outcome_table(results):
    """`{class: Counter(worst outcome over the three readers)}`, the table of RELIABILITY.md."""
    rank = ("loaded", "error", "noisy", "insane", "traceback", "hang", "crash")
    table = collections.defaultdict(collections.Counter)
    for r in results:
        table[_kind(r["path"])][max((r[k] for k in READERS), key=rank.index)] += 1
    return dict(table)


if __name__ == "__main__":  # the report: python -m tests.data.test_dicom_fuzz OUT_FOLDER
    import sys
    import time

    start = time.perf_counter()
    folders = write_cases(sys.argv[1])
    print(len(folders), "folders written in", round(time.perf_counter() - start, 1), "s")
    start = time.perf_counter()
    results = run_folders(folders)
    print("classified in", round(time.perf_counter() - start, 1), "s")
    Path(sys.argv[1], "results.json").write_text(json.dumps(results))
    for r in results:
        if any(r[k] in FAILURES for k in READERS):
            print(Path(r["path"]).name, {k: r[k] for k in READERS}, json.dumps(r["detail"])[:300])
    for kind, counts in sorted(outcome_table(results).items()):
        print(f"{kind:8s} {sum(counts.values()):4d}", dict(sorted(counts.items())))
    print("peak MB", max(r["maxrss_mb"] or 0 for r in results), "slowest s",
          max(r["seconds"] or 0 for r in results))
