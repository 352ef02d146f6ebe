"""Read and write NIfTI volumes as channels-last float32 arrays in canonical RAS order.

Every reader here checks the file before it allocates the array (a header that
declares more voxels than the file holds is an error, not a 4 GB allocation),
turns every way a file can be broken into one `DataError` line naming the file,
and reorients to the closest canonical RAS voxel order as
`nibabel.as_closest_canonical` does, so axis 0 runs left->Right, axis 1
posterior->Anterior, axis 2 inferior->Superior whatever the scanner wrote.

Size check of compressed files: a `.nii.gz` ends with the length of its
uncompressed stream modulo 2**32 (the gzip ISIZE field). It is compared first
(reading 4 bytes); only when it disagrees with the header (a multi-member
gzip, or a broken file) is the stream decompressed in 1 MiB chunks and counted,
without keeping the data, so memory stays flat. A truncated or corrupt stream
is then reported as such.

Example:

>>> from ssl3d_keras.data.nifti import load_nifti
>>> vol = load_nifti("sub-01_T1w.nii.gz")       # doctest: +SKIP
>>> vol.array.shape, vol.spacing                 # doctest: +SKIP
((176, 256, 256, 1), (1.0, 1.0, 1.0))
"""

import dataclasses
import gzip
import os
import zlib

import nibabel as nib
import numpy as np
from nibabel import orientations

from ssl3d_keras.atomic import atomic_path
from ssl3d_keras.errors import DataError

FOUR_D_MODES = ("channels", "time", "error")
_READ_ERRORS = (EOFError, OSError, zlib.error, ValueError, nib.filebasedimages.ImageFileError)
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


def load_nifti(path, *, four_d="channels", canonical=True, dtype=np.float32, frame=None):
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

    Returns:
        A `Volume`.

    Raises:
        DataError: the file is missing, not NIfTI, truncated or corrupt, its
            header disagrees with its size, it is 2D, or it holds NaN/Inf.
    """
    if four_d not in FOUR_D_MODES:
        raise ValueError(f"four_d must be one of {FOUR_D_MODES}. Received: {four_d!r}")
    path = str(path)
    img = _open_checked(path)
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
    affine = img.affine.astype(np.float64)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    if canonical:
        data, affine, spacing = _to_canonical(data, affine, spacing)
    if four_d == "time" and frame is None:
        data = np.moveaxis(data, -1, 0)[..., None]
    return Volume(np.ascontiguousarray(data), affine, spacing, path)


def load_label(path, *, canonical=True, classes=None):
    """Load an integer label map.

    Args:
        path: NIfTI file of a 3D label map (a trailing axis of size 1 is dropped).
        canonical: reorient to the closest canonical RAS voxel order.
        classes: optional iterable of the allowed label values; a value
            outside it is a `DataError`.

    Returns:
        `(label, affine, spacing)`: np.int32 `(D, H, W)`, np.float64 `(4, 4)`,
        tuple of 3 floats.

    Raises:
        DataError: as `load_nifti`, and for non-integer values, values outside
            `classes`, or a 4D label file.
    """
    path = str(path)
    img = _open_checked(path)
    shape = _spatial_shape(path, img)
    if int(np.prod(img.shape[3:], dtype=np.int64)) > 1:
        raise DataError(path, f"a label map must be 3D. Received shape {img.shape}")
    try:
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
    affine = img.affine.astype(np.float64)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    if canonical:
        label, affine, spacing = _to_canonical(label, affine, spacing)
    return np.ascontiguousarray(label), affine, spacing


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


def read_header_shape(path, *, canonical=True):
    """Spatial shape (3 ints) and number of 4th-axis entries, reading the header only.

    With `canonical`, the shape is in canonical RAS order (what `load_nifti`
    returns). Raises `DataError` as `load_nifti` for unreadable headers.
    """
    path = str(path)
    img = _open_checked(path)
    shape = _spatial_shape(path, img)
    n4 = int(np.prod(img.shape[3:], dtype=np.int64)) if len(img.shape) > 3 else 1
    if canonical:
        ornt = orientations.io_orientation(img.affine)
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


def _open_checked(path):
    """nib.load (header only) + type, dtype and size checks."""
    if not os.path.isfile(path):
        raise DataError(path, "file not found")
    try:
        img = nib.load(path)
    except _READ_ERRORS + (nib.spatialimages.HeaderDataError,) as e:
        raise DataError(path, f"is not a readable NIfTI file ({_describe(e)})") from None
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image derives from it
        raise DataError(path, f"is not a single-file NIfTI-1/NIfTI-2 image (.nii, .nii.gz). "
                        f"Received a {type(img).__name__}")
    dtype = img.get_data_dtype()
    if dtype.kind not in "iufb" or dtype.fields is not None:
        raise DataError(path, f"has data type {dtype}, expected integer or float voxels")
    _check_size(path, img)
    return img


def _spatial_shape(path, img):
    shape = tuple(int(s) for s in img.shape[:3])
    if len(shape) < 3 or min(shape) < 2:
        raise DataError(path, f"is 2D but a 3D volume is needed. Received shape {img.shape}")
    return shape


def _check_size(path, img):
    """Compare the bytes the header declares with the bytes on disk, before reading data."""
    n_voxels = int(np.prod(img.shape, dtype=np.int64))
    if n_voxels == 0:
        raise DataError(path, f"header declares no voxels. Received shape {img.shape}")
    offset = int(img.dataobj.offset)
    expected = offset + n_voxels * img.get_data_dtype().itemsize
    if path.endswith(".gz"):
        actual = _gzip_length(path, expected)
    else:
        actual = os.path.getsize(path)
    if actual != expected:
        raise DataError(path, f"header declares shape {img.shape} of {img.get_data_dtype()} at "
                        f"offset {offset} = {expected} bytes, but the file holds {actual} "
                        f"bytes{' (uncompressed)' if path.endswith('.gz') else ''}")


def _gzip_length(path, expected):
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() >= 4:
            f.seek(-4, os.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
            if isize == expected % (1 << 32):
                return expected
    total = 0
    try:
        with gzip.open(path, "rb") as g:
            while chunk := g.read(_CHUNK):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(path, f"gzip stream is truncated or corrupt ({_describe(e)})") from None
    return total


def _check_finite(path, data):
    bad = ~np.isfinite(data)
    if bad.any():
        n_nan = int(np.isnan(data).sum())
        raise DataError(path, f"holds non-finite voxels: {n_nan} NaN and "
                        f"{int(bad.sum()) - n_nan} Inf of {data.size}")


def _to_canonical(data, affine, spacing):
    """Reorient the first three axes to the closest canonical RAS order (as nibabel does)."""
    ornt = orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return data, affine, spacing
    new_affine = affine @ orientations.inv_ornt_aff(ornt, data.shape[:3])
    data = orientations.apply_orientation(data, ornt)
    # nibabel rewrites the header zooms of the reoriented image from its affine.
    new_spacing = tuple(float(z) for z in np.sqrt((new_affine[:3, :3] ** 2).sum(axis=0)))
    return data, new_affine, new_spacing


def _describe(error):
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
