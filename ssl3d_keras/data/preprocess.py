"""Preprocessing of one case: foreground crop, resampling, intensity normalisation, pad/crop.

Order of the steps (each optional), for 3D `(D, H, W, C)` and 2D `(H, W, C)`
alike, channel by channel:

1. foreground crop: the bounding box of the voxels where any channel is
   foreground (`!= 0`, or `> foreground_threshold`), grown by `crop_margin`
   voxels; the label is cropped identically. Done first so resampling works on
   less data.
2. resampling to `spacing` with `scipy.ndimage.zoom` (linear for images,
   nearest for labels, so no new label value is invented), treating voxels as
   cells (`grid_mode=True`) so the physical extent is kept; the output size is
   the rounded extent / target spacing, and the spacing actually reached is
   recorded.
3. normalisation per channel:
   - `"zscore"`: `(x - mean) / std` with mean and std over the foreground
     (`!= 0` by default: the convention for skull-stripped MRI such as
     BraTS; all voxels when there is no foreground, or `zscore_foreground=
     "all"`); background voxels are set to 0.
   - `"minmax"`: `(x - min) / (max - min)` into [0, 1].
   - `"ct"`: clip to `ct_window` (HU) and scale the window to [0, 1].
   - `"percentile"`: clip to the `percentiles` of the foreground, then z-score
     as above.
   - `"none"`.
4. centre pad (with 0) or crop to `shape`.

The affine is carried through every step, so the final voxel grid still maps
to the scanner's world coordinates.
"""

import dataclasses
from typing import Literal

import numpy as np
from scipy import ndimage

from ssl3d_keras.errors import ConfigError, DataError

NORMALIZATIONS = ("zscore", "minmax", "ct", "percentile", "none")
_EPS = 1e-8


@dataclasses.dataclass
class PreprocessConfig:
    """How `preprocess` turns a loaded case into a training volume.

    Args:
        spacing: target voxel size per spatial axis (mm), or None to keep.
        normalize: `"zscore"`, `"minmax"`, `"ct"`, `"percentile"` or `"none"`.
        ct_window: (low, high) HU window of `"ct"`. Default (-1000, 1000);
            the pancreas CT of the paper is usually windowed (-100, 240).
        percentiles: (low, high) clipping percentiles of `"percentile"`.
        zscore_foreground: voxels whose statistics the z-score uses:
            `"nonzero"` (default) or `"all"`.
        crop_foreground: crop to the bounding box of the foreground first.
        crop_margin: voxels kept around the foreground box.
        foreground_threshold: foreground is `> threshold` when set (e.g. -500
            for CT in HU), else `!= 0`.
        shape: final spatial shape (centre pad/crop), or None to keep.
    """

    spacing: tuple[float, ...] | None = None
    normalize: Literal["zscore", "minmax", "ct", "percentile", "none"] = "zscore"
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    percentiles: tuple[float, float] = (0.5, 99.5)
    zscore_foreground: Literal["nonzero", "all"] = "nonzero"
    crop_foreground: bool = False
    crop_margin: int = 0
    foreground_threshold: float | None = None
    shape: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError("normalize", f"must be one of {list(NORMALIZATIONS)}. "
                              f"Received: {self.normalize!r}")
        if self.zscore_foreground not in ("nonzero", "all"):
            raise ConfigError("zscore_foreground", f"must be 'nonzero' or 'all'. "
                              f"Received: {self.zscore_foreground!r}")
        if self.spacing is not None:
            self.spacing = tuple(float(s) for s in self.spacing)
            if not all(np.isfinite(s) and s > 0 for s in self.spacing):
                raise ConfigError("spacing", f"must be positive numbers. Received: {self.spacing}")
        if self.shape is not None:
            self.shape = tuple(int(s) for s in self.shape)
            if min(self.shape) < 1:
                raise ConfigError("shape", f"must be positive integers. Received: {self.shape}")
        self.ct_window = tuple(float(v) for v in self.ct_window)
        if len(self.ct_window) != 2 or not self.ct_window[0] < self.ct_window[1]:
            raise ConfigError("ct_window", f"must be (low, high) with low < high. "
                              f"Received: {self.ct_window}")
        self.percentiles = tuple(float(v) for v in self.percentiles)
        if (len(self.percentiles) != 2
                or not 0 <= self.percentiles[0] < self.percentiles[1] <= 100):
            raise ConfigError("percentiles", f"must be (low, high) in [0, 100] with low < high. "
                              f"Received: {self.percentiles}")
        if int(self.crop_margin) < 0:
            raise ConfigError("crop_margin", f"must be >= 0. Received: {self.crop_margin}")


def preprocess(image, label, spacing, config, *, affine=None, case_id="case"):
    """Preprocess one case.

    Args:
        image: float32 `(D, H, W, C)` or `(H, W, C)`.
        label: int `(D, H, W)` / `(H, W)`, or None.
        spacing: voxel size of `image` per spatial axis.
        config: a `PreprocessConfig`.
        affine: optional `(4, 4)` voxel-to-world matrix of `image`, carried
            through (`info["affine"]`).
        case_id: named in error messages.

    Returns:
        `(image, label, info)`: float32 `(*shape, C)`, int32 `(*shape)` or
        None, and a dict with `original_shape`, `final_shape`, `spacing`
        (reached), `crop_box` (start, stop) or None, `pad_crop` per-axis
        offsets, `normalization` (per-channel statistics), `affine` (when
        given).

    Raises:
        DataError: image and label disagree in shape, or the spacing has the
            wrong length for the image.
    """
    image = np.asarray(image, dtype=np.float32)
    dim = image.ndim - 1
    if dim not in (2, 3):
        raise DataError(case_id, f"image must be (D, H, W, C) or (H, W, C). "
                        f"Received shape {image.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != dim:
        raise DataError(case_id, f"spacing has {len(spacing)} values for a {dim}D image. "
                        f"Received {spacing}")
    for key, value in (("spacing", config.spacing), ("shape", config.shape)):
        if value is not None and len(value) != dim:
            raise ConfigError(key, f"has {len(value)} values but the data is {dim}D. "
                              f"Received: {value}")
    if label is not None:
        label = np.asarray(label)
        if label.shape != image.shape[:-1]:
            raise DataError(case_id, f"image and label shapes differ. Received image "
                            f"{image.shape[:-1]}, label {label.shape}")
        label = label.astype(np.int32)
    affine = None if affine is None else np.asarray(affine, dtype=np.float64).copy()
    info = {"original_shape": list(image.shape), "crop_box": None}

    if config.crop_foreground:
        start, stop = foreground_box(image, config.foreground_threshold, config.crop_margin)
        box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        image = image[box]
        label = None if label is None else label[box]
        affine = _shift(affine, start)
        info["crop_box"] = [list(start), list(stop)]

    if config.spacing is not None:
        image, label, spacing, affine = resample(image, label, spacing, config.spacing,
                                                 affine=affine)

    image, stats = normalize(image, config)
    info["normalization"] = stats

    if config.shape is not None:
        image, label, offsets = pad_or_crop(image, label, config.shape)
        affine = _shift(affine, offsets)
        info["pad_crop"] = list(offsets)
    info["final_shape"] = list(image.shape)
    info["spacing"] = [float(s) for s in spacing]
    if affine is not None:
        info["affine"] = affine.tolist()
    return image.astype(np.float32), label, info


def foreground_box(image, threshold=None, margin=0):
    """Bounding box of the foreground of any channel, grown by `margin`.

    Args:
        image: `(*spatial, C)`.
        threshold: foreground is `> threshold`, or `!= 0` when None.
        margin: voxels added on each side (clipped to the image).

    Returns:
        `(start, stop)` tuples of ints; the whole image when there is no
        foreground.
    """
    mask = (image != 0) if threshold is None else (image > threshold)
    mask = mask.any(axis=-1)
    spatial = mask.shape
    if not mask.any():
        return (0,) * len(spatial), tuple(spatial)
    start, stop = [], []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        start.append(max(int(hits[0]) - margin, 0))
        stop.append(min(int(hits[-1]) + 1 + margin, spatial[axis]))
    return tuple(start), tuple(stop)


def resample(image, label, spacing, target, *, affine=None):
    """Resample to a target voxel size (linear image, nearest label), per channel.

    Args:
        image: `(*spatial, C)`.
        label: `(*spatial)` or None.
        spacing: current voxel size per axis.
        target: wanted voxel size per axis.
        affine: optional `(4, 4)` matrix, updated for the new grid.

    Returns:
        `(image, label, spacing_reached, affine)`; the new size of an axis is
        `max(1, round(n * spacing / target))`.
    """
    spatial = image.shape[:-1]
    new_shape = tuple(max(1, int(round(n * s / t)))
                      for n, s, t in zip(spatial, spacing, target, strict=True))
    if new_shape == tuple(spatial):
        return image, label, tuple(spacing), affine
    factors = [m / n for m, n in zip(new_shape, spatial, strict=True)]
    channels = [ndimage.zoom(image[..., c], factors, order=1, mode="nearest", grid_mode=True)
                for c in range(image.shape[-1])]
    image = np.stack(channels, axis=-1).astype(np.float32)
    if label is not None:
        label = ndimage.zoom(label, factors, order=0, mode="nearest", grid_mode=True)
    # Cell-centred grid: new voxel j sits at old coordinate (j + 0.5) * step - 0.5.
    steps = [n / m for n, m in zip(spatial, new_shape, strict=True)]
    reached = tuple(s * st for s, st in zip(spacing, steps, strict=True))
    if affine is not None:
        dim = len(spatial)
        scale = np.eye(4)
        for axis in range(dim):
            scale[axis, axis] = steps[axis]
            scale[axis, 3] = 0.5 * steps[axis] - 0.5
        affine = affine @ scale
    return image, label, reached, affine


def normalize(image, config):
    """Intensity normalisation per channel (see the module docstring).

    Returns:
        `(image float32, stats)`: stats is a list (one dict per channel).
    """
    out = np.empty_like(image, dtype=np.float32)
    stats = []
    for c in range(image.shape[-1]):
        x = image[..., c].astype(np.float64)
        mode = config.normalize
        if mode == "zscore":
            y, s = _zscore(x, config)
        elif mode == "percentile":
            mask = _stat_mask(x, config)
            lo, hi = np.percentile(x[mask], config.percentiles)
            y, s = _zscore(np.clip(x, lo, hi), config, mask=mask)
            s.update(clip_low=float(lo), clip_high=float(hi))
        elif mode == "minmax":
            lo, hi = float(x.min()), float(x.max())
            y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
            s = {"min": lo, "max": hi}
        elif mode == "ct":
            lo, hi = config.ct_window
            y = (np.clip(x, lo, hi) - lo) / (hi - lo)
            s = {"window": [lo, hi]}
        else:
            y, s = x, {}
        out[..., c] = y
        stats.append(s)
    return out, stats


def _stat_mask(x, config):
    mask = x != 0 if config.zscore_foreground == "nonzero" else np.ones(x.shape, bool)
    return mask if mask.any() else np.ones(x.shape, bool)


def _zscore(x, config, mask=None):
    mask = _stat_mask(x, config) if mask is None else mask
    mean, std = float(x[mask].mean()), float(x[mask].std())
    y = (x - mean) / max(std, _EPS)
    y[~mask] = 0.0  # background stays at the foreground mean
    return y, {"mean": mean, "std": std, "foreground_voxels": int(mask.sum())}


def pad_or_crop(image, label, shape):
    """Centre pad (zeros) or crop to a spatial shape.

    Returns:
        `(image, label, offsets)`: `offsets[a]` is the index in the input of
        output voxel 0 along axis `a` (negative when padded).
    """
    offsets, crop, pads = [], [], []
    for n, m in zip(image.shape[:-1], shape, strict=True):
        if n >= m:
            start = (n - m) // 2
            crop.append(slice(start, start + m))
            pads.append((0, 0))
            offsets.append(start)
        else:
            before = (m - n) // 2
            crop.append(slice(None))
            pads.append((before, m - n - before))
            offsets.append(-before)
    image = np.pad(image[tuple(crop)], pads + [(0, 0)])
    if label is not None:
        label = np.pad(label[tuple(crop)], pads)
    return image, label, tuple(offsets)


def _shift(affine, offsets):
    """Affine of the grid whose voxel 0 is voxel `offsets` of the old grid."""
    if affine is None:
        return None
    shift = np.eye(4)
    shift[: len(offsets), 3] = offsets
    return affine @ shift
