"""Read and write NIfTI volumes as channels-last float32 arrays in canonical RAS order.

Every reader here checks the file before it allocates the array (a header that
declares more voxels than the file holds is an error, not a 4 GB allocation),
turns every way a file can be broken into one `DataError` line naming the file,
and reorients to the closest canonical RAS voxel order as
`nibabel.as_closest_canonical` does, so axis 0 runs left->Right, axis 1
posterior->Anterior, axis 2 inferior->Superior whatever the scanner wrote.

Untrusted headers are checked before any voxel is read:

- size: the bytes the header declares are computed with Python integers (no
  int64 overflow) and refused above a per-volume cap (`MAX_VOLUME_BYTES`,
  2 GiB by default, on the larger of the stored data and the float32 array;
  override with the `max_bytes` argument or the `SSL3D_MAX_VOLUME_BYTES`
  environment variable). A plain file must hold exactly that many bytes. A
  `.nii.gz` is stream-decompressed in 1 MiB chunks, without keeping the data,
  and counting stops as soon as it passes the declared size, so a gzip bomb
  costs milliseconds; reading to the end verifies the gzip CRC. The gzip
  trailer's length field (modulo 2**32) is never trusted.
- geometry: the affine nibabel uses (sform, else qform, else pixdim) must be
  finite, non-singular, with voxel sizes within `VOXEL_SIZE_RANGE` mm. The
  spacing returned is the column norms of the affine returned, never pixdim, so
  a volume and its affine cannot disagree. When pixdim disagrees with that
  affine beyond `PIXDIM_RTOL` (a stale or corrupt pixdim beside a valid sform),
  one warning line says so and the affine wins, as in nibabel, ITK and MONAI.
- nibabel's own log lines and warnings about the header it repairs are kept
  quiet, so a bad file gives one `DataError` line and nothing else.

Example:

>>> from ssl3d_keras.data.nifti import load_nifti
>>> vol = load_nifti("sub-01_T1w.nii.gz")       # doctest: +SKIP
>>> vol.array.shape, vol.spacing                 # doctest: +SKIP
((176, 256, 256, 1), (1.0, 1.0, 1.0))
"""

import contextlib
import dataclasses
import gzip
import logging
import math
import os
import warnings
import zlib

import nibabel as nib
import numpy as np
from nibabel import orientations

from ssl3d_keras.atomic import atomic_path
from ssl3d_keras.errors import ConfigError, DataError

FOUR_D_MODES = ("channels", "time", "error")
# Per-volume cap on the bytes a header may declare (stored data, and the float32 array).
MAX_VOLUME_BYTES = 2**31
MAX_BYTES_ENV = "SSL3D_MAX_VOLUME_BYTES"
# Voxel sizes (mm) outside this range are a corrupt header, not a scanner (a flipped exponent bit).
VOXEL_SIZE_RANGE = (1e-4, 1e4)
# pixdim may differ from the affine's voxel size by this much (relative) before a warning.
PIXDIM_RTOL = 1e-3
_READ_ERRORS = (EOFError, OSError, zlib.error, ValueError, OverflowError, MemoryError,
                nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError)
_CHUNK = 1 << 20


@dataclasses.dataclass
class Volume:
    """A loaded volume.

    Attributes:
        array: np.float32 array `(D, H, W, C)` in canonical RAS voxel order.
            With `four_d="time"` and no `frame`, `(T, D, H, W, 1)`: one
            single-channel volume per time point.
        affine: np.float64 `(4, 4)` voxel-to-world (mm) matrix of `array`.
        spacing: voxel size in mm along the three spatial axes of `array`.
        path: the file read.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple
    path: str


def load_nifti(path, *, four_d="channels", canonical=True, dtype=np.float32, frame=None,
               max_bytes=None):
    """Load a NIfTI-1/2 image (`.nii`, `.nii.gz`) as a channels-last volume.

    Scaling (`scl_slope`, `scl_inter`) is applied; any byte order and integer
    or float data type is read.

    Args:
        path: file to read.
        four_d: what the 4th axis of a 4D file is. `"channels"` (default):
            modalities, the array is `(D, H, W, C)`. `"time"`: time points,
            the array is `(T, D, H, W, 1)`, or `(D, H, W, 1)` for one `frame`.
            `"error"`: a 4D file is a `DataError`.
        canonical: reorient to the closest canonical RAS voxel order.
        dtype: float dtype of the returned array.
        frame: with `four_d="time"`, the index of the single time point to
            read (only that frame's bytes are read from an uncompressed file).
        max_bytes: per-volume cap in bytes, or None for `SSL3D_MAX_VOLUME_BYTES`
            if set, else `MAX_VOLUME_BYTES` (2 GiB).

    Returns:
        A `Volume`; its `spacing` is the column norms of its `affine`.

    Raises:
        DataError: the file is missing, not NIfTI, truncated or corrupt, its
            header disagrees with its size or declares more than `max_bytes`,
            its affine is non-finite, singular or of implausible voxel size, it
            is 2D, or it holds NaN/Inf.
    """
    if four_d not in FOUR_D_MODES:
        raise ValueError(f"four_d must be one of {FOUR_D_MODES}. Received: {four_d!r}")
    path = str(path)
    img, affine = _open_checked(path, max_bytes)
    shape = _spatial_shape(path, img)
    extra = img.shape[3:]
    n4 = int(np.prod(extra)) if extra else 1
    if extra and (len([e for e in extra if e != 1]) > 1):
        raise DataError(path, f"has more than one non-spatial axis; expected 3D or 4D. "
                        f"Received shape {img.shape}")
    is_4d = n4 > 1
    if is_4d and four_d == "error":
        raise DataError(path, f"is 4D but a 3D volume is needed. Received shape {img.shape}")
    if frame is not None and (four_d != "time" or not 0 <= frame < n4):
        raise DataError(path, f"has no time frame {frame} (four_d={four_d!r}, {n4} frames)")
    try:
        with _quiet_nibabel():
            proxy = img.dataobj
            if frame is not None and len(img.shape) == 4:
                data = np.asarray(proxy[:, :, :, frame], dtype=dtype).reshape(shape + (1,))
            elif frame is not None:  # extra singleton axes: read all, keep one frame
                data = img.get_fdata(dtype=dtype).reshape(shape + (n4,))[..., frame : frame + 1]
            else:
                data = np.asarray(img.get_fdata(dtype=dtype)).reshape(shape + (n4,))
    except _READ_ERRORS as e:
        raise DataError(path, f"image data is truncated or corrupt ({_describe(e)})") from None
    _check_finite(path, data)
    if canonical:
        data, affine = _to_canonical(data, affine)
    if four_d == "time" and frame is None:
        data = np.moveaxis(data, -1, 0)[..., None]
    return Volume(np.ascontiguousarray(data), affine, spacing_of(affine), path)


def load_label(path, *, canonical=True, classes=None, max_bytes=None):
    """Load an integer label map.

    Args:
        path: NIfTI file of a 3D label map (a trailing axis of size 1 is dropped).
        canonical: reorient to the closest canonical RAS voxel order.
        classes: optional iterable of the allowed label values; a value
            outside it is a `DataError`.
        max_bytes: per-volume cap, as in `load_nifti`.

    Returns:
        `(label, affine, spacing)`: np.int32 `(D, H, W)`, np.float64 `(4, 4)`,
        tuple of 3 floats (the column norms of the affine).

    Raises:
        DataError: as `load_nifti`, and for non-integer values, values outside
            `classes`, or a 4D label file.
    """
    path = str(path)
    img, affine = _open_checked(path, max_bytes)
    shape = _spatial_shape(path, img)
    if math.prod(int(s) for s in img.shape[3:]) > 1:
        raise DataError(path, f"a label map must be 3D. Received shape {img.shape}")
    try:
        with _quiet_nibabel():
            data = np.asanyarray(img.dataobj).reshape(shape)
    except _READ_ERRORS as e:
        raise DataError(path, f"label data is truncated or corrupt ({_describe(e)})") from None
    if data.dtype.kind == "f":
        _check_finite(path, data)
        fractional = data != np.round(data)
        if fractional.any():
            raise DataError(path, f"label values must be integers. Received "
                            f"{int(fractional.sum())} non-integer voxels, e.g. "
                            f"{float(data[fractional][0])!r}")
    if data.size and (data.min() < np.iinfo(np.int32).min or data.max() > np.iinfo(np.int32).max):
        raise DataError(path, f"label values do not fit int32. Received range "
                        f"[{data.min()}, {data.max()}]")
    label = data.astype(np.int32)
    if classes is not None:
        check_label_values(path, label, classes)
    if canonical:
        label, affine = _to_canonical(label, affine)
    return np.ascontiguousarray(label), affine, spacing_of(affine)


def check_label_values(source, label, classes):
    """Raise `DataError` if `label` holds a value not in `classes`."""
    allowed = {int(c) for c in classes}
    found = {int(v) for v in np.unique(label)}
    unknown = sorted(found - allowed)
    if unknown:
        raise DataError(source, f"label values {unknown} are not among the declared classes "
                        f"{sorted(allowed)}. Received values {sorted(found)}")


def check_same_grid(source, shape_a, affine_a, shape_b, affine_b, *, what="label", atol=1e-3):
    """Raise `DataError` unless two volumes share the voxel grid.

    Args:
        source: case id or file named in the message.
        shape_a, affine_a: spatial shape and `(4, 4)` affine of the image.
        shape_b, affine_b: the same of the other volume (a label, a channel).
        what: what the second volume is, for the message.
        atol: tolerance in mm on the affine entries.
    """
    if tuple(shape_a) != tuple(shape_b):
        raise DataError(source, f"image and {what} shapes differ. Received image "
                        f"{tuple(shape_a)}, {what} {tuple(shape_b)}")
    if not np.allclose(affine_a, affine_b, atol=atol, rtol=0):
        worst = float(np.max(np.abs(np.asarray(affine_a) - np.asarray(affine_b))))
        raise DataError(source, f"image and {what} affines differ (largest difference "
                        f"{worst:.4g} mm). Received image {np.round(affine_a, 4).tolist()}, "
                        f"{what} {np.round(affine_b, 4).tolist()}")


def match_grid(source, shape_a, affine_a, array_b, affine_b, *, what="label", atol=1e-3):
    """`array_b` in the voxel order of grid a, when both grids are one up to axis order and flips.

    Closest-canonical reorientation brings two files of one grid to the same
    voxel order, except when an axis is oblique near 45 degrees: then each file
    can pick a different closest axis. The voxel-to-voxel map between the two
    affines says what they really are: a signed permutation with the matching
    shift means the same grid stored in another order, so `array_b` is
    reoriented; anything else must pass `check_same_grid`.

    Args:
        source: case id or file named in the message.
        shape_a, affine_a: spatial shape and `(4, 4)` affine of the reference (the image).
        array_b: array `(D, H, W, ...)` of the other volume (a label, a channel).
        affine_b: its `(4, 4)` affine.
        what: what the second volume is, for the message.
        atol: tolerance in mm on the affine entries.

    Returns:
        `array_b`, reoriented to grid a if needed.

    Raises:
        DataError: the grids differ (shape or geometry), as `check_same_grid`.
    """
    affine_a = np.asarray(affine_a, dtype=np.float64)
    affine_b = np.asarray(affine_b, dtype=np.float64)
    shape_b = tuple(array_b.shape[:3])
    if tuple(shape_a) != shape_b or not np.allclose(affine_a, affine_b, atol=atol, rtol=0):
        with np.errstate(all="ignore"):
            voxel_map = np.linalg.lstsq(affine_a, affine_b, rcond=None)[0][:3, :3]
        signs = np.round(voxel_map)
        is_permutation = (np.isfinite(voxel_map).all()
                          and np.allclose(voxel_map, signs, atol=1e-3)
                          and (np.abs(signs).sum(axis=0) == 1).all()
                          and (np.abs(signs).sum(axis=1) == 1).all())
        if is_permutation:
            ornt = np.array([[int(np.flatnonzero(signs[:, j])[0]), signs[:, j].sum()]
                             for j in range(3)])
            affine_b = affine_b @ orientations.inv_ornt_aff(ornt, shape_b)
            array_b = orientations.apply_orientation(array_b, ornt)
    check_same_grid(source, shape_a, affine_a, array_b.shape[:3], affine_b, what=what, atol=atol)
    return np.ascontiguousarray(array_b)


def read_header_shape(path, *, canonical=True, max_bytes=None):
    """Spatial shape (3 ints) and number of 4th-axis entries, reading the header only.

    With `canonical`, the shape is in canonical RAS order (what `load_nifti`
    returns). Raises `DataError` as `load_nifti` for a bad header (size cap,
    geometry, the length of a plain file); a compressed stream is verified
    when the volume is loaded, not here.
    """
    path = str(path)
    img, affine = _open_checked(path, max_bytes, verify_stream=False)
    shape = _spatial_shape(path, img)
    n4 = math.prod(int(s) for s in img.shape[3:])
    if canonical:
        ornt = orientations.io_orientation(affine)
        out = [0, 0, 0]
        for axis, (new_axis, _) in enumerate(ornt):
            out[int(new_axis)] = shape[axis]
        shape = tuple(out)
    return shape, n4


def save_nifti(path, array, affine, *, label=False):
    """Write a NIfTI-1 file atomically (temp file in the same folder, then rename).

    Args:
        path: destination, `.nii` or `.nii.gz`.
        array: `(D, H, W)` or `(D, H, W, C)`; written as float32, or as the
            smallest of uint8/int16/int32 holding the values when `label`.
        affine: `(4, 4)` voxel-to-world matrix.
        label: write an integer label map.
    """
    path = str(path)
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise ValueError(f"array must be (D, H, W) or (D, H, W, C). Received shape {array.shape}")
    if label:
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        for candidate in (np.uint8, np.int16, np.int32):
            info = np.iinfo(candidate)
            if info.min <= lo and hi <= info.max:
                array = array.astype(candidate)
                break
    else:
        array = array.astype(np.float32)
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def spacing_of(affine):
    """Voxel size (mm) along the three voxel axes of a `(4, 4)` affine: its column norms."""
    affine = np.asarray(affine, dtype=np.float64)
    return tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def max_volume_bytes(max_bytes=None):
    """The per-volume cap in bytes: `max_bytes`, else `$SSL3D_MAX_VOLUME_BYTES`, else 2 GiB."""
    if max_bytes is not None:
        return int(max_bytes)
    text = os.environ.get(MAX_BYTES_ENV)
    if text is None:
        return MAX_VOLUME_BYTES
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(MAX_BYTES_ENV, f"must be a positive number of bytes. Received: {text!r}")
    return value


@contextlib.contextmanager
def _quiet_nibabel():
    """Keep nibabel's log lines and warnings, and numpy's, off the terminal.

    Yields the list of nibabel's log messages (the header repairs it made),
    so the caller can refuse the file or say it in one warning line; a broken
    file then gives one `DataError` line and nothing else.
    """
    logger = nib.imageglobals.logger
    saved = (list(logger.handlers), logger.level, logger.propagate)
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    for old in saved[0]:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield messages
    finally:
        logger.removeHandler(handler)
        for old in saved[0]:
            logger.addHandler(old)
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


def _open_checked(path, max_bytes=None, *, verify_stream=True):
    """nib.load (header only) + type, dtype, size and geometry checks; `(img, affine)`."""
    if not os.path.isfile(path):
        raise DataError(path, "file not found")
    with _quiet_nibabel() as repairs:
        try:
            img = nib.load(path)
            affine = np.array(img.affine, dtype=np.float64)
        except _READ_ERRORS as e:
            raise DataError(path, f"is not a readable NIfTI file ({_describe(e)})") from None
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image derives from it
        raise DataError(path, f"is not a single-file NIfTI-1/NIfTI-2 image (.nii, .nii.gz). "
                        f"Received a {type(img).__name__}")
    dtype = img.get_data_dtype()
    if dtype.kind not in "iufb" or dtype.fields is not None:
        raise DataError(path, f"has data type {dtype}, expected integer or float voxels")
    _check_size(path, img, max_volume_bytes(max_bytes), verify_stream)
    _check_affine(path, img, affine, repairs)
    return img, affine


def _spatial_shape(path, img):
    shape = tuple(int(s) for s in img.shape[:3])
    if len(shape) < 3 or min(shape) < 2:
        raise DataError(path, f"is 2D but a 3D volume is needed. Received shape {img.shape}")
    return shape


def _affine_source(header):
    if int(header["sform_code"]) > 0:
        return "sform"
    return "qform" if int(header["qform_code"]) > 0 else "pixdim"


def _check_affine(path, img, affine, repairs=()):
    """Refuse a non-finite, singular or implausibly scaled affine; warn when pixdim disagrees."""
    which = _affine_source(img.header)
    zeroed = [m for m in repairs if "pixdim" in m and "non-zero" in m]
    if zeroed and which != "sform":
        # nibabel replaced zero voxel sizes by 1 mm: a guess, and this affine is built on them.
        raise DataError(path, f"has zero voxel sizes in pixdim, which its {which} affine is "
                        f"built from. Received pixdim {_mm(img.header['pixdim'][1:4])} after "
                        f"nibabel's repair ({zeroed[0]})")
    shown = np.round(affine, 4).tolist()
    if not np.isfinite(affine).all():
        raise DataError(path, f"has a non-finite {which} affine (NaN or Inf), so its voxels "
                        f"have no place in the world. Received {shown}")
    zooms = spacing_of(affine)
    low, high = VOXEL_SIZE_RANGE
    if not all(low <= z <= high for z in zooms):
        raise DataError(path, f"declares voxel sizes {_mm(zooms)} mm in its {which} affine, "
                        f"outside the plausible {low:g} to {high:g} mm (a corrupt header)")
    singular = np.linalg.svd(affine[:3, :3], compute_uv=False)
    if not singular[-1] > 1e-6 * singular[0]:
        raise DataError(path, f"has a singular {which} affine (its voxel axes do not span 3D). "
                        f"Received {shown}")
    pixdim = np.abs(np.asarray(img.header["pixdim"][1:4], dtype=np.float64))
    if which == "sform" and not np.allclose(pixdim, zooms, rtol=PIXDIM_RTOL, atol=0):
        warnings.warn(f"{path}: pixdim {_mm(pixdim)} mm disagrees with the voxel size "
                      f"{_mm(zooms)} mm of the sform affine; using the affine's",
                      UserWarning, stacklevel=4)
    if repairs:
        warnings.warn(f"{path}: nibabel repaired the header: "
                      f"{'; '.join(dict.fromkeys(repairs))}", UserWarning, stacklevel=4)


def _mm(values):
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _check_size(path, img, max_bytes, verify_stream):
    """Compare the bytes the header declares with the cap and the bytes on disk, before reading."""
    shape = tuple(int(s) for s in img.header.get_data_shape())
    if any(s < 1 for s in shape):
        raise DataError(path, f"header declares no voxels. Received shape {shape}")
    n_voxels = math.prod(shape)  # Python ints: no overflow, whatever NIfTI-2 declares
    dtype = img.get_data_dtype()
    data_bytes = n_voxels * dtype.itemsize
    memory = max(data_bytes, n_voxels * 4)
    if memory > max_bytes:
        raise DataError(path, f"header declares shape {shape} of {dtype} = {_gb(memory)} "
                        f"in memory, above the per-volume cap of {_gb(max_bytes)} (raise it "
                        f"with {MAX_BYTES_ENV} or max_bytes if the volume is real)")
    offset = int(img.dataobj.offset)
    expected = offset + data_bytes
    compressed = path.endswith(".gz")
    if compressed and not verify_stream:
        return
    actual = _gzip_length(path, expected) if compressed else os.path.getsize(path)
    if actual != expected:
        held = (f"more than {expected} bytes (uncompressed; counting stopped at {actual})"
                if actual > expected and compressed
                else f"{actual} bytes{' (uncompressed)' if compressed else ''}")
        raise DataError(path, f"header declares shape {shape} of {dtype} at offset {offset} = "
                        f"{expected} bytes, but the file holds {held}")


def _gb(n):
    return f"{n} bytes ({n / 2**30:.3g} GiB)" if n >= 1e7 else f"{n} bytes"


def _gzip_length(path, expected):
    """Length of the decompressed stream, counted up to just past `expected`; checks the CRC.

    The data are not kept, so memory stays flat; reading to the end makes the
    gzip module verify every member's CRC and length.
    """
    total = 0
    try:
        with gzip.open(path, "rb") as g:
            while chunk := g.read(_CHUNK):
                total += len(chunk)
                if total > expected:  # a bomb or a wrong header: no need to count further
                    return total
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(path, f"gzip stream is truncated or corrupt ({_describe(e)})") from None
    return total


def _check_finite(path, data):
    bad = ~np.isfinite(data)
    if bad.any():
        n_nan = int(np.isnan(data).sum())
        raise DataError(path, f"holds non-finite voxels: {n_nan} NaN and "
                        f"{int(bad.sum()) - n_nan} Inf of {data.size}")


def _to_canonical(data, affine):
    """Reorient the first three axes to the closest canonical RAS order (as nibabel does)."""
    ornt = orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return data, affine
    new_affine = affine @ orientations.inv_ornt_aff(ornt, data.shape[:3])
    return orientations.apply_orientation(data, ornt), new_affine


def _describe(error):
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
