"""Read DICOM series as channels-last float32 volumes in canonical RAS order.

A series is the set of files sharing a SeriesInstanceUID, one 2D slice per
file. `find_series(root)` groups the files of a folder into series and names
each one; `load_series(paths)` turns one series into a volume:

- slices are sorted by their position along the slice normal (the
  ImagePositionPatient of each file projected on the cross product of the row
  and column directions of ImageOrientationPatient), not by file name or
  InstanceNumber;
- RescaleSlope and RescaleIntercept are applied per slice (CT in HU), in
  float64 and stored as float32;
- the affine is built from ImagePositionPatient, ImageOrientationPatient,
  PixelSpacing and the step between slices, converted from the DICOM patient
  frame (LPS: x to the patient's Left, y Posterior) to the RAS+ world of
  nibabel (x, y negated), and the volume is then reoriented to the closest
  canonical RAS voxel order with nibabel's `orientations`, as NIfTI volumes
  are in `ssl3d_keras.data.nifti`.

Voxel `(i, j, k)` of the volume before reorientation is column `i`, row `j`
of the `k`-th slice along the normal. The third column of the affine is the
mean step between slice positions, so a gantry-tilted CT stack keeps its exact
geometry as a sheared affine (its third spacing is the step length, longer
than the distance between the slice planes). MONOCHROME1 values are not
inverted: the rescaled values are the physical ones; the interpretation only
concerns display.

A broken series is a `DataError` naming the file and the problem: a file that
is not DICOM, is truncated, has no pixel data (a report, a plan, a DICOMDIR),
is multi-frame, colour or palette, has an unknown transfer syntax or one that
pydicom cannot decode with the packages installed (uncompressed and RLE always
work); a single slice; slices with different orientations, sizes or pixel
spacings; two slices at one position; gaps between slices that differ by more
than `spacing_tolerance` of the median gap (a missing slice); positions that do
not lie on a line.

Every header is untrusted (a bit flip, a hand-edited tag, a file made to
hurt), so before any pixel is decoded: Rows and Columns must be positive
integers; position, orientation and pixel spacing finite, of 3, 6 and 2
values, the orientation two orthogonal unit vectors, the pixel spacing and the
step between slices within `nifti.VOXEL_SIZE_RANGE` mm; RescaleSlope and
RescaleIntercept single finite numbers, the slope not 0; and the volume the
headers declare (Rows x Columns x files, as float32) must fit the per-volume
cap of `nifti.MAX_VOLUME_BYTES` (2 GiB; `max_bytes=` or the
`SSL3D_MAX_VOLUME_BYTES` environment variable), so a header declaring 65535 x
65535 pixels is refused before anything is allocated. Rescaled values that
overflow float32 are refused too. pydicom's warnings about the values it
repairs while reading are kept off the terminal: a file either loads or gives
one `DataError` line.

Example:

>>> from ssl3d_keras.data.dicom import find_series, load_series
>>> series = find_series("exports/patient_17")        # doctest: +SKIP
>>> case_id, files = series[0]                         # doctest: +SKIP
>>> vol = load_series(files)                           # doctest: +SKIP
>>> vol.array.shape, vol.spacing  # (D, H, W, 1), mm   # doctest: +SKIP
((512, 512, 120, 1), (0.7, 0.7, 2.5))
"""

import contextlib
import logging
import os
import re
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from nibabel import orientations

from ssl3d_keras.data import nifti
from ssl3d_keras.errors import DataError

__all__ = ["DICOM_SUFFIXES", "SPACING_TOLERANCE", "find_series", "has_dicom_preamble",
           "is_dicom_candidate", "load_series", "read_series_shape"]

# Scanners write `.dcm`, `.dicom`, `.ima` (Siemens), no suffix, or a UID as the name
# (`1.2.840....5`, whose "suffix" is digits). Other suffixes (README.txt, index.html,
# the viewer a CD ships) are not read.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
SPACING_TOLERANCE = 0.1
# Media Storage Directory Storage: a DICOMDIR index, not an image.
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_HEADER_TAGS = ("SeriesInstanceUID", "PatientID", "SeriesDescription", "SeriesNumber",
                "SOPClassUID")
_ORIENTATION_ATOL = 1e-3
_DUPLICATE_MM = 1e-2
_RLE_LOSSLESS = "1.2.840.10008.1.2.5"  # pydicom decodes it without extra packages
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")


def is_dicom_candidate(path):
    """Whether a file's name is one a DICOM file may have (see `DICOM_SUFFIXES`).

    Example:

    >>> [is_dicom_candidate(p) for p in ("IM0001", "ct.dcm", "1.2.840.1.5", "README.txt",
    ...                                  "DICOMDIR", ".hidden.dcm")]
    [True, True, True, False, False, False]
    """
    name = Path(path).name
    if name.startswith(".") or name.upper() == "DICOMDIR":
        return False
    suffix = Path(name).suffix.lower()
    return suffix == "" or suffix in DICOM_SUFFIXES or suffix[1:].isdigit()


def has_dicom_preamble(path):
    """Whether the file starts with the 128-byte preamble and `DICM` of a DICOM file."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def find_series(root):
    """Group the DICOM files under `root` into series, one case each.

    Files are grouped by SeriesInstanceUID (headers only are read). A series
    is named after the folder holding its files when no other series has
    files in that folder (`PT01/CT_ABDOMEN`); otherwise, in a folder that
    mixes series, `<folder>/<PatientID>_s<SeriesNumber>_<SeriesDescription>`
    with every character outside `A-Z a-z 0-9 . _ -` replaced by `_` (and
    `_1`, `_2`, ... in SeriesInstanceUID order when several series would
    share a name). A series at the top of `root` drops the `<folder>/`.

    A candidate file (`is_dicom_candidate`) that does not parse as DICOM
    joins the series of its folder when its folder holds exactly one series
    (that case then fails to load, naming the file); otherwise it is a case
    of its own, named by its path, that fails to load. So a bad file is
    reported, not silently dropped.

    Args:
        root: a folder.

    Returns:
        A list of `(case_id, files)`, `files` a sorted tuple of str paths,
        sorted by case id.
    """
    import pydicom

    root = Path(root)
    series = defaultdict(list)  # uid -> [path]
    headers = {}  # uid -> header of its first file
    unreadable = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and is_dicom_candidate(p)):
        try:
            with _quiet_pydicom():
                ds = pydicom.dcmread(path, stop_before_pixels=True,
                                     specific_tags=list(_HEADER_TAGS))
                meta = getattr(ds, "file_meta", {})
                sop_classes = (str(ds.get("SOPClassUID", "")),
                               str(meta.get("MediaStorageSOPClassUID", "")))
                uid = str(ds.get("SeriesInstanceUID", "") or f"no SeriesInstanceUID: {path}")
                _series_name(ds)  # values are decoded when read: a broken one fails here
        except Exception:  # noqa: BLE001 - pydicom raises many types for a non-DICOM file
            unreadable.append(path)
            continue
        if _DICOMDIR_SOP_CLASS in sop_classes:
            continue
        series[uid].append(path)
        headers.setdefault(uid, ds)

    folders = {uid: _common_folder(paths) for uid, paths in series.items()}
    series_under = defaultdict(set)  # folder -> uids with a file in it or below it
    for uid, paths in series.items():
        for path in paths:
            for folder in path.parents:
                series_under[folder].add(uid)
                if folder == root:
                    break
    named = defaultdict(list)  # case id -> uids, sorted
    for uid in sorted(series):
        rel = folders[uid].relative_to(root).as_posix()
        if rel != "." and len(series_under[folders[uid]]) == 1:
            named[rel].append(uid)
        else:
            name = _series_name(headers[uid])
            named[name if rel == "." else f"{rel}/{name}"].append(uid)
    cases, owner = {}, {}
    for name, uids in named.items():
        for n, uid in enumerate(uids, start=1):
            cid = name if len(uids) == 1 else f"{name}_{n}"
            cases[cid] = list(series[uid])
            owner[folders[uid]] = cid if len(series_under[folders[uid]]) == 1 else None
    for path in unreadable:
        cid = owner.get(path.parent)
        if cid is not None:
            cases[cid].append(path)
        else:
            cases[path.relative_to(root).as_posix()] = [path]
    return [(cid, tuple(str(p) for p in sorted(files))) for cid, files in sorted(cases.items())]


def load_series(paths, *, canonical=True, spacing_tolerance=SPACING_TOLERANCE, max_bytes=None):
    """Load one DICOM series (one single-frame slice per file) as a volume.

    Args:
        paths: the files of the series, in any order.
        canonical: reorient to the closest canonical RAS voxel order, as
            `ssl3d_keras.data.nifti.load_nifti` does.
        spacing_tolerance: largest allowed difference between a gap of
            consecutive slices and the median gap, as a fraction of the
            median gap (also the allowed sideways drift of the positions).
        max_bytes: per-volume cap on the float32 array the headers declare,
            or None for `SSL3D_MAX_VOLUME_BYTES` if set, else
            `nifti.MAX_VOLUME_BYTES` (2 GiB).

    Returns:
        A `ssl3d_keras.data.nifti.Volume`: float32 array `(D, H, W, 1)`,
        float64 `(4, 4)` RAS affine, spacing in mm, and `path` the folder of
        the first file.

    Raises:
        DataError: naming the file and the problem (see the module docstring).
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise DataError("DICOM series", "has no file")
    with _quiet_pydicom():
        return _load(paths, canonical, spacing_tolerance, nifti.max_volume_bytes(max_bytes))


def _load(paths, canonical, spacing_tolerance, max_bytes):
    slices = [_read_slice(p) for p in paths]
    uids = {s["uid"] for s in slices}
    if len(uids) > 1:
        raise DataError(paths[0], f"the files hold {len(uids)} series (SeriesInstanceUID); a "
                        f"case must be one series. Received {sorted(uids)}")
    if len(slices) < 2:
        raise DataError(paths[0], "is a series of one slice; a 3D volume needs at least 2")
    first = slices[0]
    for s in slices[1:]:
        if s["shape"] != first["shape"]:
            raise DataError(s["path"], f"rows x columns differ within the series: "
                            f"{s['shape']} here, {first['shape']} in {first['path']}")
        if np.max(np.abs(s["orientation"] - first["orientation"])) > _ORIENTATION_ATOL:
            raise DataError(s["path"], f"slice orientations differ within the series "
                            f"(ImageOrientationPatient {s['orientation'].round(4).tolist()} "
                            f"here, {first['orientation'].round(4).tolist()} in "
                            f"{first['path']})")
        if not np.allclose(s["pixel_spacing"], first["pixel_spacing"], rtol=1e-3, atol=0):
            raise DataError(s["path"], f"pixel spacings differ within the series: "
                            f"{s['pixel_spacing'].tolist()} here, "
                            f"{first['pixel_spacing'].tolist()} in {first['path']}")
    row_dir, col_dir = first["orientation"][:3], first["orientation"][3:]
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda s: float(s["position"] @ normal))
    step = _check_positions(slices, normal, spacing_tolerance)
    _check_size(first["path"], first["shape"], len(slices), first["bits"], max_bytes)

    array = np.empty((*reversed(first["shape"]), len(slices), 1), np.float32)
    for k, s in enumerate(slices):
        array[:, :, k, 0] = _pixels(s).T  # pixel_array is (rows, columns): voxel i = column
    row_spacing, col_spacing = first["pixel_spacing"]
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = slices[0]["position"]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    if canonical:
        ornt = orientations.io_orientation(affine)
        affine = affine @ orientations.inv_ornt_aff(ornt, array.shape[:3])
        array = orientations.apply_orientation(array, ornt)
    spacing = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return nifti.Volume(np.ascontiguousarray(array), affine, spacing,
                        os.path.dirname(slices[0]["path"]))


def read_series_shape(paths, *, max_bytes=None):
    """Spatial shape (3 ints) of `load_series(paths)`, from the first file's header only.

    The slice count is the number of files; a broken series is found when it
    is loaded. Raises `DataError` when the first header does not read, its
    geometry is broken or the declared volume is above the cap (as in
    `load_series`).
    """
    import pydicom

    path = str(paths[0])
    with _quiet_pydicom():
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            _, orientation, _ = _geometry(ds, path)
            rows, columns = _dimensions(ds, path)
            bits = _bits(ds, path)
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - pydicom raises many types, also when decoding
            raise DataError(path, f"has no readable slice geometry ({_describe(e)})") from None
        _check_size(path, (rows, columns), len(paths), bits, nifti.max_volume_bytes(max_bytes))
    shape = (columns, rows, len(paths))
    directions = np.stack([orientation[:3], orientation[3:],
                           np.cross(orientation[:3], orientation[3:])], axis=1)
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ directions  # LPS -> RAS
    out = [0, 0, 0]
    for axis, (new_axis, _) in enumerate(orientations.io_orientation(affine)):
        out[int(new_axis)] = shape[axis]
    return tuple(out)


def _read_slice(path):
    """One file: its dataset and the geometry of its slice, checked."""
    import pydicom

    if not os.path.isfile(path):
        raise DataError(path, "file not found")
    try:
        ds = pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError:
        raise DataError(path, "is not a DICOM file (no DICM preamble)") from None
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for a broken file
        raise DataError(path, f"is not a readable DICOM file ({_describe(e)})") from None
    try:
        return _checked_slice(ds, path)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - values are decoded when read: a corrupt one raises
        raise DataError(path, f"has a malformed header ({_describe(e)})") from None


def _checked_slice(ds, path):
    if "PixelData" not in ds:
        kind = getattr(ds.get("SOPClassUID"), "name", None)
        raise DataError(path, f"holds no pixel data{f' (a {kind})' if kind else ''}, so it is "
                        f"not an image slice")
    frames = _integer(ds, "NumberOfFrames", path, default=1)
    if frames > 1:
        raise DataError(path, f"is a multi-frame image ({frames} frames); only series of "
                        f"single-frame files are read (convert it, e.g. with dcm2niix)")
    samples = _integer(ds, "SamplesPerPixel", path, default=1)
    if samples != 1:
        raise DataError(path, f"has {samples} samples per pixel "
                        f"({ds.get('PhotometricInterpretation', '?')}); only greyscale series "
                        f"are read")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip()
    if photometric not in _GREYSCALE:
        raise DataError(path, f"has PhotometricInterpretation {photometric or 'missing'}; only "
                        f"greyscale series ({' or '.join(_GREYSCALE)}) are read")
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is not None and not syntax.is_transfer_syntax:
        raise DataError(path, f"has an unknown transfer syntax ({syntax}), so its pixel data "
                        f"cannot be decoded")
    position, orientation, pixel_spacing = _geometry(ds, path)
    return {"path": path, "ds": ds, "uid": str(ds.get("SeriesInstanceUID", "")),
            "shape": _dimensions(ds, path), "position": position, "orientation": orientation,
            "pixel_spacing": pixel_spacing, "bits": _bits(ds, path),
            "rescale": (_number(ds, "RescaleSlope", path, 1.0),
                        _number(ds, "RescaleIntercept", path, 0.0))}


def _geometry(ds, path):
    """Position (3), orientation (6) and pixel spacing (2) of a slice, float64, checked."""
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if ds.get(tag) is None:
            raise DataError(path, f"has no {tag}; a slice of a 3D series needs its position, "
                            f"orientation and pixel spacing (a radiograph or a secondary "
                            f"capture is not a volume)")
    try:
        position, orientation, pixel_spacing = (
            np.array([float(v) for v in _values(ds[tag].value)], np.float64)
            for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"))
    except (TypeError, ValueError, OverflowError) as e:
        raise DataError(path, f"has a malformed geometry tag ({_describe(e)})") from None
    if position.shape != (3,) or orientation.shape != (6,) or pixel_spacing.shape != (2,):
        raise DataError(path, f"ImagePositionPatient, ImageOrientationPatient and PixelSpacing "
                        f"must hold 3, 6 and 2 values. Received {position.size}, "
                        f"{orientation.size}, {pixel_spacing.size}")
    if not all(np.all(np.isfinite(v)) for v in (position, orientation, pixel_spacing)):
        raise DataError(path, f"has a non-finite geometry value. Received position "
                        f"{position.tolist()}, orientation {orientation.tolist()}, pixel spacing "
                        f"{pixel_spacing.tolist()}")
    low, high = nifti.VOXEL_SIZE_RANGE
    if not (low <= min(pixel_spacing) and max(pixel_spacing) <= high):
        raise DataError(path, f"PixelSpacing must be within [{low:g}, {high:g}] mm. Received "
                        f"{pixel_spacing.tolist()}")
    row, col = orientation[:3], orientation[3:]
    if (abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2
            or abs(row @ col) > 1e-2):
        raise DataError(path, f"ImageOrientationPatient is not two orthogonal unit vectors. "
                        f"Received {orientation.tolist()}")
    return position, orientation, pixel_spacing


def _dimensions(ds, path):
    """(Rows, Columns), each a positive integer."""
    rows, columns = (_integer(ds, tag, path) for tag in ("Rows", "Columns"))
    if rows is None or columns is None or rows < 1 or columns < 1:
        raise DataError(path, f"Rows and Columns must be positive integers. Received "
                        f"{rows} x {columns}")
    return rows, columns


def _bits(ds, path):
    """BitsAllocated when it is a plausible one (1 to 64), else 16 (pydicom refuses it later)."""
    bits = _integer(ds, "BitsAllocated", path, default=16)
    return bits if 1 <= bits <= 64 else 16


def _values(value):
    """A tag's value as a list (a single number is one value)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _single_value(ds, tag, path, integer=False):
    """A tag holding one number, as a float (None when missing or empty)."""
    value = ds.get(tag)
    if value is None or value == "":
        return None
    try:
        (value,) = _values(value)
        number = float(value)
        if integer and number != int(number):
            raise ValueError(f"{value!r} is not an integer")
    except (TypeError, ValueError, OverflowError) as e:
        raise DataError(path, f"has a malformed {tag} ({_describe(e)})") from None
    return number


def _integer(ds, tag, path, default=None):
    """An integer tag (US, IS) as an int; `default` when missing or empty."""
    number = _single_value(ds, tag, path, integer=True)
    return default if number is None else int(number)


def _number(ds, tag, path, default):
    """RescaleSlope/RescaleIntercept: one finite number (`default` when missing or empty)."""
    number = _single_value(ds, tag, path)
    if number is None:
        return default
    value = ds.get(tag)
    if not np.isfinite(number) or (tag == "RescaleSlope" and number == 0):
        raise DataError(path, f"{tag} must be a finite number{', not 0' * (tag == 'RescaleSlope')}"
                        f". Received {value}")
    return number


def _check_size(path, shape, count, bits, max_bytes):
    """Refuse a declared volume above the cap before anything is allocated or decoded."""
    voxels = shape[0] * shape[1] * count
    size = voxels * max(4, -(-bits // 8))  # the float32 array, or the stored values if wider
    if size > max_bytes:
        raise DataError(path, f"the series declares {count} slices of {shape[0]} x {shape[1]} "
                        f"pixels ({_bytes(size)} in memory), above the per-volume cap of "
                        f"{_bytes(max_bytes)} (raise it with max_bytes= or "
                        f"{nifti.MAX_BYTES_ENV})")


def _bytes(size):
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


def _check_positions(slices, normal, tolerance):
    """The mean step between consecutive slices; raises for duplicates, gaps and drift."""
    positions = np.stack([s["position"] for s in slices])
    steps = np.diff(positions, axis=0)  # (N - 1, 3)
    gaps = steps @ normal
    for k, gap in enumerate(gaps):
        if gap < _DUPLICATE_MM:
            raise DataError(slices[k + 1]["path"], f"is at the same position as "
                            f"{slices[k]['path']} ({positions[k].round(3).tolist()}): several "
                            f"echoes, phases or time points in one series are not read; split "
                            f"them into one series each")
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if abs(gaps[worst] - median) > tolerance * median:
        raise DataError(slices[worst + 1]["path"], f"slices are unevenly spaced: "
                        f"{gaps[worst]:.4g} mm from {slices[worst]['path']}, median gap "
                        f"{median:.4g} mm over {len(slices)} slices (a missing slice?)")
    mean_step = (positions[-1] - positions[0]) / (len(slices) - 1)
    low, high = nifti.VOXEL_SIZE_RANGE
    if not low <= np.linalg.norm(mean_step) <= high:
        raise DataError(slices[-1]["path"], f"the step between slices, "
                        f"{np.linalg.norm(mean_step):.4g} mm (from {slices[0]['path']}), is not "
                        f"within [{low:g}, {high:g}] mm")
    drift = np.linalg.norm(steps - mean_step, axis=1)
    worst = int(np.argmax(drift))
    if drift[worst] > tolerance * median:
        raise DataError(slices[worst + 1]["path"], f"slice positions do not lie on a line: "
                        f"the step from {slices[worst]['path']} is "
                        f"{steps[worst].round(4).tolist()} mm, the mean step "
                        f"{mean_step.round(4).tolist()} mm")
    return mean_step


def _pixels(s):
    """The slice's values after RescaleSlope/RescaleIntercept, float64 `(rows, columns)`."""
    ds, path = s["ds"], s["path"]
    syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    try:
        pixels = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as e:  # noqa: BLE001 - decoders raise many types
        if (syntax is not None and syntax.is_compressed and syntax != _RLE_LOSSLESS
                and "missing dependencies" in str(e)):
            raise DataError(path, f"is compressed with '{syntax.name}', which pydicom cannot "
                            f"decode with the packages installed (install pylibjpeg or gdcm, "
                            f"or decompress the series, e.g. gdcmconv --raw)") from None
        raise DataError(path, f"pixel data is truncated or corrupt ({_describe(e)})"
                        ) from None
    if pixels.shape != s["shape"]:
        raise DataError(path, f"pixel data has shape {pixels.shape}, the header says "
                        f"{s['shape']}")
    slope, intercept = s["rescale"]
    values = pixels * slope + intercept
    largest = float(np.abs(values).max()) if values.size else 0.0
    # Past float32's range the values are Inf; far enough from 0 that float32's step exceeds
    # the slope, neighbouring stored values collapse into one (an intercept of 1e38 leaves a
    # flat image): both are a corrupt rescale, not a scan.
    if largest > np.finfo(np.float32).max or np.spacing(np.float32(largest)) > abs(slope):
        raise DataError(path, f"rescaled values do not fit float32 (RescaleSlope {slope:g}, "
                        f"RescaleIntercept {intercept:g}, largest {largest:.3g})")
    return values


@contextlib.contextmanager
def _quiet_pydicom():
    """Keep pydicom's warnings and log lines (the values it repairs or guesses) off the terminal.

    A broken file then gives one `DataError` line and nothing else, as a NIfTI file does.
    """
    logger = logging.getLogger("pydicom")  # its modules log to children of it
    saved = (list(logger.handlers), logger.propagate)
    silent = logging.NullHandler()
    for old in saved[0]:
        logger.removeHandler(old)
    logger.addHandler(silent)
    logger.propagate = False
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.removeHandler(silent)
        for old in saved[0]:
            logger.addHandler(old)
        logger.propagate = saved[1]


def _series_name(ds):
    parts = [str(ds.get("PatientID", "") or ""), f"s{ds.get('SeriesNumber', '')}"
             if ds.get("SeriesNumber") not in (None, "") else "",
             str(ds.get("SeriesDescription", "") or "")]
    name = "_".join(_sanitise(p) for p in parts if _sanitise(p))
    return name or "series"


def _sanitise(text):
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9._-]", "_", text.strip())).strip("_.")


def _common_folder(paths):
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def _describe(error):
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
