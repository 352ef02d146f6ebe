"""Predictions back on the source grid: resample between voxel grids through their affines.

`ssl3d prepare` reorients a case to canonical RAS order, crops it, resamples
it and pads/crops it, carrying the voxel-to-world affine through every step
(the manifest stores it per case). Each step is affine, so one map undoes the
whole chain: for every voxel `v` of the original file,
`u = inv(A_prepared) @ A_source @ v` is where it lies on the prepared grid,
and the prediction is sampled there (nearest neighbour for labels, linear for
probabilities). The result overlays the original scan in any viewer.

NIfTI affines map voxel centres, so voxels are cells of unit width around
integer coordinates: a point belongs to the grid when `-0.5 <= u < n - 0.5`
on every axis; outside, the output is `cval`.

Example:

>>> from ssl3d_keras.downstream.geometry import write_prediction
>>> case = manifest["cases"][0]                                  # doctest: +SKIP
>>> write_prediction("pred/case.nii.gz", label, case["affine"],  # doctest: +SKIP
...                  case["sources"][0])
"""

import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ssl3d_keras.atomic import atomic_path
from ssl3d_keras.errors import DataError

__all__ = ["resample_to_grid", "source_grid", "write_prediction"]

ORDERS = (0, 1)
_READ_ERRORS = (EOFError, OSError, zlib.error, ValueError, nib.filebasedimages.ImageFileError,
                nib.spatialimages.HeaderDataError)


def resample_to_grid(array, affine, target_shape, target_affine, *, order=0, cval=0):
    """Resample a 3D array from its voxel grid onto another grid of the same world.

    Output voxel `t` takes the value of `array` at the (fractional) voxel
    `inv(affine) @ target_affine @ t`: any chain of flips, permutations,
    crops, pads and rescalings is undone exactly, up to the interpolation.

    Args:
        array: array `(D, H, W)` or `(D, H, W, K)` (channels last, each channel
            resampled on its own) on the grid `affine`.
        affine: `(4, 4)` voxel-to-world matrix of `array`.
        target_shape: 3 ints, the spatial shape of the output grid.
        target_affine: `(4, 4)` voxel-to-world matrix of the output grid.
        order: 0 (nearest neighbour: labels; values and dtype are kept) or 1
            (linear: probability maps; the output is float, float64 unless
            `array` is already float). Default 0.
        cval: value of the output voxels that fall outside `array`'s grid.
            Default 0.

    Input shape:
        `(D, H, W)` or `(D, H, W, K)`.

    Output shape:
        `(*target_shape)` or `(*target_shape, K)`.

    Returns:
        np.ndarray on the target grid.

    Raises:
        ValueError: `array` is not 3D (2D images are not supported), an affine
            is not a finite, invertible `(4, 4)` matrix, `target_shape` is not
            3 positive ints, or `order` is not 0 or 1.

    Example:

    >>> flip = np.diag([-1.0, 1.0, 1.0, 1.0]); flip[0, 3] = 3
    >>> out = resample_to_grid(np.arange(4)[:, None, None], np.eye(4), (4, 1, 1), flip)
    >>> out.ravel().tolist()
    [3, 2, 1, 0]
    """
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise ValueError(f"resample_to_grid handles 3D volumes only: array must be (D, H, W) or "
                         f"(D, H, W, K). Received a rank-{array.ndim} array of shape "
                         f"{array.shape}")
    if order not in ORDERS:
        raise ValueError(f"order must be 0 (nearest, labels) or 1 (linear). Received: {order!r}")
    affine = _check_affine(affine, "affine")
    target_affine = _check_affine(target_affine, "target_affine")
    target_shape = _check_shape(target_shape)
    # Output voxel -> input voxel. inv() of a matrix that is a scaled permutation
    # is exact enough that order 0 lands on the same voxel as integer maths.
    mapping = np.linalg.inv(affine) @ target_affine
    matrix, offset = mapping[:3, :3], mapping[:3, 3]
    channels = array[..., None] if array.ndim == 3 else array
    out = [_resample_channel(channels[..., k], matrix, offset, target_shape, order, cval)
           for k in range(channels.shape[-1])]
    out = np.stack(out, axis=-1)
    return out[..., 0] if array.ndim == 3 else out


def source_grid(path):
    """Spatial shape and affine of a NIfTI file as stored (no reorientation).

    Only the header is read. The affine is nibabel's `img.affine` (the sform
    when its code is set, else the qform, else the zooms), the matrix
    `ssl3d_keras.data.nifti.load_nifti` starts from.

    Args:
        path: `.nii` or `.nii.gz` file (3D, or 4D with channels/time last).

    Returns:
        `(shape, affine)`: tuple of 3 ints, np.float64 `(4, 4)`.

    Raises:
        DataError: the file is missing, not a NIfTI-1/2 image, or has fewer
            than 3 axes.
    """
    return _grid(_open_header(path))


def write_prediction(path, label, prepared_affine, source_path, *, dtype=np.uint8):
    """Write a label map predicted on the prepared grid as NIfTI on the source file's grid.

    The label is resampled by nearest neighbour from `prepared_affine`'s grid to
    the grid of `source_path` (its spatial shape and affine as stored), then
    written atomically with that affine as both sform and qform (codes as the
    source's, or 1 where the source has none), so it overlays the original
    scan. Voxels of the source outside the prepared grid (cropped away) are 0.

    A source with no NIfTI grid of its own (a DICOM series) is given as its
    loaded grid, a `(shape, affine)` pair (the manifest's `original_shape` and
    `source_affine`); the prediction is then written on that grid, in the
    world coordinates of the series.

    Args:
        path: output file, `.nii` or `.nii.gz` (folders are created).
        label: integer array `(D, H, W)` on the prepared grid.
        prepared_affine: `(4, 4)` voxel-to-world matrix of the prepared grid
            (the manifest's `cases[i]["affine"]`; a nested list is fine).
        source_path: the original image file (the manifest's
            `cases[i]["sources"][0]`), or a `(shape, affine)` grid.
        dtype: integer dtype of the stored labels. Default `np.uint8`.

    Input shape:
        `label`: `(D, H, W)`.

    Returns:
        `Path` of the written file.

    Raises:
        DataError: `source_path` cannot be read as NIfTI.
        ValueError: `label` is not 3D, or holds values that `dtype` cannot
            store.

    Example:

    >>> case = manifest["cases"][0]                                    # doctest: +SKIP
    >>> write_prediction("pred.nii.gz", prediction.argmax(-1),         # doctest: +SKIP
    ...                  case["affine"], case["sources"][0])
    """
    label = np.asarray(label)
    if label.ndim != 3:
        raise ValueError(f"label must be (D, H, W). Received a rank-{label.ndim} array of shape "
                         f"{label.shape}")
    dtype = np.dtype(dtype)
    if dtype.kind in "iu" and label.size:
        info = np.iinfo(dtype)
        lo, hi = label.min(), label.max()
        if lo < info.min or hi > info.max:
            raise ValueError(f"label values do not fit {dtype}; pass a wider dtype. Received "
                             f"range [{lo}, {hi}]")
    if isinstance(source_path, (tuple, list)):
        shape, affine = _check_shape(source_path[0]), _check_affine(source_path[1], "source grid")
        codes, spatial_unit = (1, 1), "mm"
    else:
        source = _open_header(source_path)
        shape, affine = _grid(source)
        header = source.header
        codes = (int(header["sform_code"]) or 1, int(header["qform_code"]) or 1)
        spatial_unit = header.get_xyzt_units()[0]
    out = resample_to_grid(label, prepared_affine, shape, affine, order=0, cval=0)
    img = nib.Nifti1Image(out.astype(dtype), affine)
    img.set_sform(affine, code=codes[0])
    img.set_qform(affine, code=codes[1])
    img.header.set_xyzt_units(spatial_unit if spatial_unit != "unknown" else "mm")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def _resample_channel(values, matrix, offset, shape, order, cval):
    if values.dtype == bool:
        out = _resample_channel(values.view(np.uint8), matrix, offset, shape, order, cval)
        return out.astype(bool) if order == 0 else out
    if order == 0:
        # grid-constant rounds half up and keeps exactly the cells -0.5 <= u < n - 0.5.
        return ndimage.affine_transform(values, matrix, offset=offset, output_shape=shape,
                                        output=values.dtype, order=0, mode="grid-constant",
                                        cval=cval)
    dtype = values.dtype if values.dtype.kind == "f" else np.float64
    # Inside the border cells interpolation clamps to the edge voxel (a cell is
    # uniform), instead of blending with cval; outside the cells the value is cval.
    out = ndimage.affine_transform(values, matrix, offset=offset, output_shape=shape,
                                   output=dtype, order=1, mode="nearest", prefilter=False)
    inside = ndimage.affine_transform(np.ones(values.shape, np.uint8), matrix, offset=offset,
                                      output_shape=shape, order=0, mode="grid-constant", cval=0)
    out[inside == 0] = cval
    return out


def _check_affine(affine, name):
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"{name} must be a (4, 4) voxel-to-world matrix of a 3D grid. Received "
                         f"shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise ValueError(f"{name} must be finite and invertible. Received "
                         f"{np.round(matrix, 4).tolist()}")
    return matrix


def _check_shape(shape):
    shape = tuple(int(s) for s in np.atleast_1d(shape))
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"target_shape must be 3 positive ints. Received: {shape}")
    return shape


def _open_header(path):
    """nib.load (lazy: the header only), with every failure as a DataError naming the file."""
    path = str(path)
    if not os.path.isfile(path):
        raise DataError(path, "source image file not found")
    try:
        img = nib.load(path)
    except _READ_ERRORS as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(path, f"is not a readable NIfTI file ({type(e).__name__}: {first})"
                        ) from None
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image derives from it
        raise DataError(path, f"is not a single-file NIfTI-1/NIfTI-2 image (.nii, .nii.gz). "
                        f"Received a {type(img).__name__}")
    if len(img.shape) < 3:
        raise DataError(path, f"is 2D but a 3D grid is needed. Received shape {img.shape}")
    return img


def _grid(img):
    return tuple(int(s) for s in img.shape[:3]), np.asarray(img.affine, dtype=np.float64)
