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
is multi-frame, colour, or compressed with a transfer syntax that pydicom
cannot decode with the packages installed (uncompressed and RLE always work);
a single slice; slices with different orientations, sizes or pixel spacings;
two slices at one position; gaps between slices that differ by more than
`spacing_tolerance` of the median gap (a missing slice); positions that do
not lie on a line.

Example:

>>> from ssl3d_keras.data.dicom import find_series, load_series
>>> series = find_series("exports/patient_17")        # doctest: +SKIP
>>> case_id, files = series[0]                         # doctest: +SKIP
>>> vol = load_series(files)                           # doctest: +SKIP
>>> vol.array.shape, vol.spacing  # (D, H, W, 1), mm   # doctest: +SKIP
((512, 512, 120, 1), (0.7, 0.7, 2.5))
"""

import os
import re
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
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_HEADER_TAGS))
        except Exception:  # noqa: BLE001 - pydicom raises many types for a non-DICOM file
            unreadable.append(path)
            continue
        meta = getattr(ds, "file_meta", {})
        if _DICOMDIR_SOP_CLASS in (str(ds.get("SOPClassUID", "")),
                                   str(meta.get("MediaStorageSOPClassUID", ""))):
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or f"no SeriesInstanceUID: {path}")
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


def load_series(paths, *, canonical=True, spacing_tolerance=SPACING_TOLERANCE):
    """Load one DICOM series (one single-frame slice per file) as a volume.

    Args:
        paths: the files of the series, in any order.
        canonical: reorient to the closest canonical RAS voxel order, as
            `ssl3d_keras.data.nifti.load_nifti` does.
        spacing_tolerance: largest allowed difference between a gap of
            consecutive slices and the median gap, as a fraction of the
            median gap (also the allowed sideways drift of the positions).

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


def read_series_shape(paths):
    """Spatial shape (3 ints) of `load_series(paths)`, from the first file's header only.

    The slice count is the number of files; a broken series is found when it
    is loaded. Raises `DataError` when the first header does not read.
    """
    import pydicom

    path = str(paths[0])
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient], np.float64)
        shape = (int(ds.Columns), int(ds.Rows), len(paths))
        directions = np.stack([orientation[:3], orientation[3:],
                               np.cross(orientation[:3], orientation[3:])], axis=1)
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for a broken file
        raise DataError(path, f"has no readable slice geometry ({_describe(e)})") from None
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
    if "PixelData" not in ds:
        kind = getattr(ds.get("SOPClassUID"), "name", None)
        raise DataError(path, f"holds no pixel data{f' (a {kind})' if kind else ''}, so it is "
                        f"not an image slice")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(path, f"is a multi-frame image ({frames} frames); only series of "
                        f"single-frame files are read (convert it, e.g. with dcm2niix)")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise DataError(path, f"has {samples} samples per pixel "
                        f"({ds.get('PhotometricInterpretation', '?')}); only greyscale series "
                        f"are read")
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                "Rows", "Columns"):
        if ds.get(tag) is None:
            raise DataError(path, f"has no {tag}; a slice of a 3D series needs its position, "
                            f"orientation and pixel spacing (a radiograph or a secondary "
                            f"capture is not a volume)")
    try:
        position = np.array([float(v) for v in ds.ImagePositionPatient], np.float64)
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient], np.float64)
        pixel_spacing = np.array([float(v) for v in ds.PixelSpacing], np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(path, f"has a malformed geometry tag ({_describe(e)})") from None
    if position.shape != (3,) or orientation.shape != (6,) or pixel_spacing.shape != (2,):
        raise DataError(path, f"ImagePositionPatient, ImageOrientationPatient and PixelSpacing "
                        f"must hold 3, 6 and 2 values. Received {position.size}, "
                        f"{orientation.size}, {pixel_spacing.size}")
    if not all(np.all(np.isfinite(v)) for v in (position, orientation, pixel_spacing)):
        raise DataError(path, f"has a non-finite geometry value. Received position "
                        f"{position.tolist()}, orientation {orientation.tolist()}, pixel spacing "
                        f"{pixel_spacing.tolist()}")
    if min(pixel_spacing) <= 0:
        raise DataError(path, f"PixelSpacing must be positive. Received {pixel_spacing.tolist()}")
    row, col = orientation[:3], orientation[3:]
    if (abs(np.linalg.norm(row) - 1) > 1e-2 or abs(np.linalg.norm(col) - 1) > 1e-2
            or abs(row @ col) > 1e-2):
        raise DataError(path, f"ImageOrientationPatient is not two orthogonal unit vectors. "
                        f"Received {orientation.tolist()}")
    return {"path": path, "ds": ds, "uid": str(ds.get("SeriesInstanceUID", "")),
            "shape": (int(ds.Rows), int(ds.Columns)), "position": position,
            "orientation": orientation, "pixel_spacing": pixel_spacing}


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
        if syntax is not None and syntax.is_compressed and syntax != _RLE_LOSSLESS:
            raise DataError(path, f"is compressed with '{syntax.name}', which pydicom cannot "
                            f"decode with the packages installed (install pylibjpeg or gdcm, "
                            f"or decompress the series, e.g. gdcmconv --raw)") from None
        raise DataError(path, f"pixel data is truncated or corrupt ({_describe(e)})"
                        ) from None
    if pixels.shape != s["shape"]:
        raise DataError(path, f"pixel data has shape {pixels.shape}, the header says "
                        f"{s['shape']}")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return pixels * slope + intercept


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
