"""Preprocessing of one case: foreground crop, resampling, resizing, normalisation, pad/crop.

Order of the steps (each optional), for 3D `(D, H, W, C)` and 2D `(H, W, C)`
alike (photographs take the same path as volumes), channel by channel:

1. foreground crop: the bounding box of the voxels where any channel is
   foreground (`!= 0`, or `> foreground_threshold`), grown by `crop_margin`
   voxels; the label is cropped identically. Done first so resampling works on
   less data.
2. resampling to `spacing` with `scipy.ndimage.zoom` (linear for images,
   nearest for labels, so no new label value is invented), treating voxels as
   cells (`grid_mode=True`) so the physical extent is kept; the output size is
   the rounded extent / target spacing, and the spacing actually reached is
   recorded.
3. resizing to a fixed spatial shape `resize` (the old code's 128^3 volumes
   and 224^2 fundus photographs), with the same interpolation and cell-centred
   grid as 2., so the new voxels cover the same physical extent; the spacing
   reached is recorded. `spacing` and `resize` may both be given.
4. normalisation per channel:
   - `"zscore"`: `(x - mean) / std` with mean and std over the foreground
     (`!= 0` by default: the convention for skull-stripped MRI such as
     BraTS; all voxels when there is no foreground, or `zscore_foreground=
     "all"`); background voxels are set to 0.
   - `"minmax"`: `(x - min) / (max - min)` into [0, 1].
   - `"ct"`: clip to `ct_window` (HU) and scale the window to [0, 1].
   - `"percentile"`: clip to the `percentiles` of the foreground, then z-score
     as above.
   - `"none"`.
5. centre pad (with 0) or crop to `shape`.

The affine is carried through every step, so the final voxel grid still maps
to the scanner's world coordinates (and `ssl3d predict` resamples a prediction
back onto the source file's grid through it).

Before 2. and 3. the output shapes are computed, and a case whose resampled
volume would exceed `max_voxels` is refused: a header with a voxel size of
1e5 mm must fail at once instead of allocating gigabytes.

Last, the **padding share** of the result is measured: the fraction of the
final volume outside the bounding box of its foreground (`> foreground_threshold`
in the units before normalisation when a threshold is set, else the voxels
that are not exactly 0 after normalisation). Zero slabs along one axis give the
rotation task its answer, so `prepare_dataset` warns above `max_padding_share`.
"""

import dataclasses
import math
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
        resize: fixed spatial shape to resample the (cropped, resampled)
            image to, e.g. `(128, 128, 128)` or `(224, 224)`; linear for
            images, nearest for labels. None keeps the shape.
        normalize: `"zscore"`, `"minmax"`, `"ct"`, `"percentile"` or `"none"`.
        ct_window: (low, high) HU window of `"ct"`. Default (-1000, 1000);
            the pancreas CT of the paper is usually windowed (-100, 240).
        percentiles: (low, high) clipping percentiles of `"percentile"`.
        zscore_foreground: voxels whose statistics the z-score uses:
            `"nonzero"` (default) or `"all"`.
        crop_foreground: crop to the bounding box of the foreground first.
        crop_margin: voxels kept around the foreground box.
        foreground_threshold: foreground is `> threshold` when set (e.g. -500
            for CT in HU: air is -1000, so `!= 0` would crop nothing), else
            `!= 0`. Used by the crop and by the padding share.
        shape: final spatial shape (centre pad/crop), or None to keep.
        max_voxels: the largest spatial voxel count a resample or resize may
            produce; a larger one is a `DataError` before any memory is
            taken. Default 512**3.
        max_padding_share: share of a prepared volume that may be padding
            (outside the foreground's bounding box) before `prepare_dataset`
            warns, in [0, 1]. Default 0.5; 1 never warns.
    """

    spacing: tuple[float, ...] | None = None
    resize: tuple[int, ...] | None = None
    normalize: Literal["zscore", "minmax", "ct", "percentile", "none"] = "zscore"
    ct_window: tuple[float, float] = (-1000.0, 1000.0)
    percentiles: tuple[float, float] = (0.5, 99.5)
    zscore_foreground: Literal["nonzero", "all"] = "nonzero"
    crop_foreground: bool = False
    crop_margin: int = 0
    foreground_threshold: float | None = None
    shape: tuple[int, ...] | None = None
    max_voxels: int = 512**3
    max_padding_share: float = 0.5

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
        for key in ("resize", "shape"):
            value = getattr(self, key)
            if value is not None:
                value = tuple(int(s) for s in value)
                if not value or min(value) < 1:
                    raise ConfigError(key, f"must be positive integers. Received: {value}")
                setattr(self, key, value)
        if isinstance(self.max_voxels, bool) or int(self.max_voxels) < 1:
            raise ConfigError("max_voxels", f"must be a positive integer. "
                              f"Received: {self.max_voxels!r}")
        self.max_voxels = int(self.max_voxels)
        self.max_padding_share = float(self.max_padding_share)
        if not 0 <= self.max_padding_share <= 1:
            raise ConfigError("max_padding_share", f"must be in [0, 1]. "
                              f"Received: {self.max_padding_share}")
        if self.foreground_threshold is not None:
            self.foreground_threshold = float(self.foreground_threshold)
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


def preprocess(image, label, spacing, config, *, affine=None, case_id="case", source=None):
    """Preprocess one case.

    Args:
        image: float32 `(D, H, W, C)` or `(H, W, C)`.
        label: int `(D, H, W)` / `(H, W)`, or None.
        spacing: voxel size of `image` per spatial axis.
        config: a `PreprocessConfig`.
        affine: optional `(4, 4)` voxel-to-world matrix of `image`, carried
            through (`info["affine"]`).
        case_id: named in error messages.
        source: the file named when a resample is refused (default `case_id`).

    Returns:
        `(image, label, info)`: float32 `(*shape, C)`, int32 `(*shape)` or
        None, and a dict with `original_shape`, `final_shape`, `spacing`
        (reached), `crop_box` (start, stop) or None, `resize` (`from_shape`,
        `to_shape`, `spacing` reached) or None, `pad_crop` per-axis offsets,
        `normalization` (per-channel statistics), `padding_share`, `affine`
        (when given).

    Raises:
        DataError: image and label disagree in shape, the spacing has the
            wrong length for the image, or a resample or resize would exceed
            `config.max_voxels`.
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
    for key in ("spacing", "resize", "shape"):
        value = getattr(config, key)
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
    info = {"original_shape": list(image.shape), "crop_box": None, "resize": None}

    if config.crop_foreground:
        start, stop = foreground_box(image, config.foreground_threshold, config.crop_margin)
        box = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        image = image[box]
        label = None if label is None else label[box]
        affine = _shift(affine, start)
        info["crop_box"] = [list(start), list(stop)]

    check_output_size(image.shape[:-1], spacing, config, source or case_id)
    if config.spacing is not None:
        image, label, spacing, affine = resample(image, label, spacing, config.spacing,
                                                 affine=affine)
    if config.resize is not None:
        before = list(image.shape[:-1])
        image, label, spacing, affine = resize(image, label, spacing, config.resize,
                                               affine=affine)
        info["resize"] = {"from_shape": before, "to_shape": list(config.resize),
                          "spacing": [float(s) for s in spacing]}

    # The threshold is in the image's own units (HU), so the box is found before normalising.
    box = (None if config.foreground_threshold is None
           else foreground_extent(image, config.foreground_threshold))
    image, stats = normalize(image, config)
    info["normalization"] = stats

    offsets = (0,) * dim
    if config.shape is not None:
        image, label, offsets = pad_or_crop(image, label, config.shape)
        affine = _shift(affine, offsets)
        info["pad_crop"] = list(offsets)
    spatial = image.shape[:-1]
    if config.foreground_threshold is None:
        box = foreground_extent(image)
    elif box is not None:
        box = _clip_box([a - o for a, o in zip(box[0], offsets, strict=True)],
                        [b - o for b, o in zip(box[1], offsets, strict=True)], spatial)
    info["padding_share"] = padding_share(spatial, box)
    info["final_shape"] = list(image.shape)
    info["spacing"] = [float(s) for s in spacing]
    if affine is not None:
        info["affine"] = affine.tolist()
    return image.astype(np.float32), label, info


def check_output_size(spatial, spacing, config, source="case"):
    """Refuse a resample or resize whose output would exceed `config.max_voxels`.

    Computed from the shapes alone, before any array is allocated.

    Args:
        spatial: spatial shape of the (cropped) image.
        spacing: its voxel size per axis.
        config: a `PreprocessConfig`.
        source: the file or case named in the error.

    Raises:
        DataError: naming `source`, the step and the shape it would make.

    Example:

    >>> check_output_size((512, 512, 2), (1e5, 1.0, 1.0), PreprocessConfig(spacing=(1, 1, 1)))
    Traceback (most recent call last):
    ...
    ssl3d_keras.errors.DataError: case: resampling to spacing (1.0, 1.0, 1.0) would make a
    (51200000, 512, 2) volume (52,428,800,000 voxels), more than max_voxels=134,217,728; ...
    """
    spatial = tuple(int(n) for n in spatial)
    planned = []
    if config.spacing is not None:
        planned.append((f"resampling to spacing {config.spacing}",
                        spacing_shape(spatial, spacing, config.spacing)))
    if config.resize is not None:
        planned.append((f"resizing to {config.resize}", tuple(config.resize)))
    for step, shape in planned:
        count = math.prod(shape)
        if count > config.max_voxels:
            raise DataError(source, f"{step} would make a {shape} volume ({count:,} voxels), "
                            f"more than max_voxels={config.max_voxels:,}; check the voxel size "
                            f"in the file's header or raise max_voxels. Received spacing "
                            f"{tuple(float(s) for s in spacing)}, shape {spatial}")


def spacing_shape(spatial, spacing, target):
    """Spatial shape after resampling to `target`: `max(1, round(n * spacing / target))`."""
    return tuple(max(1, int(round(n * s / t)))
                 for n, s, t in zip(spatial, spacing, target, strict=True))


def foreground_extent(image, threshold=None):
    """Bounding box `(start, stop)` of the foreground of any channel, or None if there is none.

    Args:
        image: `(*spatial, C)`.
        threshold: foreground is `> threshold`, or `!= 0` when None.
    """
    mask = ((image != 0) if threshold is None else (image > threshold)).any(axis=-1)
    if not mask.any():
        return None
    start, stop = [], []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        start.append(int(hits[0]))
        stop.append(int(hits[-1]) + 1)
    return tuple(start), tuple(stop)


def padding_share(shape, box):
    """Share of a grid of `shape` outside the box `(start, stop)`; 1.0 when `box` is None.

    Example:

    >>> padding_share((10, 10), ((0, 2), (10, 7)))  # columns 0, 1 and 7..9 are empty
    0.5
    """
    total = math.prod(int(n) for n in shape)
    if box is None or total == 0:
        return 1.0
    inside = math.prod(max(0, int(b) - int(a)) for a, b in zip(*box, strict=True))
    return float(1.0 - inside / total)


def _clip_box(start, stop, shape):
    start = [min(max(a, 0), n) for a, n in zip(start, shape, strict=True)]
    stop = [min(max(b, 0), n) for b, n in zip(stop, shape, strict=True)]
    if any(b <= a for a, b in zip(start, stop, strict=True)):
        return None  # the foreground was cropped away entirely
    return tuple(start), tuple(stop)


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
    spatial = image.shape[:-1]
    box = foreground_extent(image, threshold)
    if box is None:
        return (0,) * len(spatial), tuple(spatial)
    start = tuple(max(a - margin, 0) for a in box[0])
    stop = tuple(min(b + margin, n) for b, n in zip(box[1], spatial, strict=True))
    return start, stop


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
    new_shape = spacing_shape(image.shape[:-1], spacing, target)
    return resize(image, label, spacing, new_shape, affine=affine)


def resize(image, label, spacing, shape, *, affine=None):
    """Resample to a fixed spatial shape (linear image, nearest label), per channel.

    Voxels are cells (`grid_mode=True`): the new grid covers the same physical
    extent, so the spacing grows by `n / m` on an axis resized from n to m
    voxels, and the affine is updated to match.

    Args:
        image: `(*spatial, C)`.
        label: `(*spatial)` or None.
        spacing: current voxel size per axis.
        shape: wanted spatial shape.
        affine: optional `(4, 4)` matrix, updated for the new grid.

    Input shape:
        `image`: `(D, H, W, C)` or `(H, W, C)`.

    Output shape:
        `image`: `(*shape, C)`; `label`: `shape`.

    Returns:
        `(image, label, spacing_reached, affine)`.

    Example:

    >>> image = np.arange(4, dtype=np.float32).reshape(4, 1, 1)  # (H, W, C), 1 mm cells
    >>> out, _, spacing, _ = resize(image, None, (1.0, 1.0), (2, 1))
    >>> out[:, 0, 0].tolist(), spacing
    ([0.5, 2.5], (2.0, 1.0))
    """
    spatial = image.shape[:-1]
    new_shape = tuple(int(m) for m in shape)
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
