"""Whole-volume inference: sliding windows blended with a Gaussian importance map.

A segmentation model fine-tuned on patches is applied to a whole case by
tiling it with overlapping windows, predicting each window and averaging the
overlaps with weights that fall off towards the window border (where a
convolutional network sees zero padding instead of context), as MONAI's
`sliding_window_inference` and nnU-Net do. Arrays are numpy `(*spatial, C)`
with 2 or 3 spatial axes; the model is any callable on a numpy batch, so this
module needs no TensorFlow itself.
"""

import itertools
import math

import numpy as np

from ssl3d_keras.errors import ConfigError

__all__ = [
    "gaussian_importance_map",
    "sliding_window_predict",
    "slicewise_predict",
    "window_starts",
]

BLENDS = ("gaussian", "constant")


def _as_tuple(value, dim, name):
    if isinstance(value, int | np.integer):
        value = (int(value),) * dim
    else:
        value = tuple(int(v) for v in value)
    if len(value) != dim or min(value) < 1:
        raise ConfigError(
            name, f"expected a positive int or {dim} positive ints. Received: {name}={value}"
        )
    return value


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(name, f"expected an int >= 1. Received: {name}={value!r}")


def _check_overlap(overlap):
    if not 0.0 <= float(overlap) < 1.0:
        raise ConfigError("overlap", f"expected a float in [0, 1). Received: overlap={overlap!r}")


def gaussian_importance_map(window, sigma_scale=0.125):
    """Weights of a window for blending: a Gaussian centred in the window.

    The standard deviation on each axis is `sigma_scale * window[axis]`. The
    map is normalised to a maximum of 1 and any weight that underflows to zero
    is replaced by the smallest nonzero weight, so every voxel of a window
    counts a little (nnU-Net does the same) and no voxel of the volume is left
    with zero total weight.

    Args:
        window: tuple of ints, the window size per spatial axis (any rank).
        sigma_scale: float > 0, standard deviation as a fraction of the
            window size. Default 0.125 (nnU-Net and MONAI).

    Returns:
        np.ndarray float32 of shape `window`, values in `(0, 1]`, symmetric
        under flipping any axis.

    Raises:
        ConfigError: a non-positive window size or `sigma_scale`.

    Example:
    ```python
    from ssl3d_keras.downstream.inference import gaussian_importance_map
    weights = gaussian_importance_map((32, 32, 32))  # (32, 32, 32), max 1.0
    ```
    """
    window = tuple(int(w) for w in window)
    window = _as_tuple(window, len(window), "window")
    if not float(sigma_scale) > 0:
        raise ConfigError(
            "sigma_scale", f"expected a float > 0. Received: sigma_scale={sigma_scale!r}"
        )
    # Sum log-weights and subtract the maximum before exp, so even a tiny sigma
    # leaves the peak at exactly 1 instead of underflowing everywhere.
    log_weights = np.zeros(window, np.float64)
    for axis, size in enumerate(window):
        centre = (size - 1) / 2.0  # between the two middle voxels for even sizes: symmetric
        sigma = sigma_scale * size
        profile = -0.5 * ((np.arange(size) - centre) / sigma) ** 2
        shape = [1] * len(window)
        shape[axis] = size
        log_weights = log_weights + profile.reshape(shape)
    weights = np.exp(log_weights - log_weights.max()).astype(np.float32)
    positive = weights > 0
    if not positive.all():
        weights[~positive] = weights[positive].min()
    return weights


def window_starts(size, window, overlap):
    """Start positions of windows that cover one axis.

    Windows step by `max(1, int(window * (1 - overlap)))`; the last window is
    moved back to end flush with the axis (`start = size - window`), so every
    window lies inside `[0, size)` and the axis is covered. When
    `size <= window` there is a single window at 0.

    Args:
        size: int >= 1, length of the axis.
        window: int >= 1, length of a window.
        overlap: float in `[0, 1)`, fraction of a window shared with the next.

    Returns:
        list of ints, increasing start positions.

    Raises:
        ConfigError: `overlap` outside `[0, 1)` or a non-positive size.

    Example:
    ```python
    window_starts(20, 8, 0.5)  # [0, 4, 8, 12]
    window_starts(21, 8, 0.5)  # [0, 4, 8, 12, 13]
    ```
    """
    _check_positive_int("size", size)
    _check_positive_int("window", window)
    _check_overlap(overlap)
    if size <= window:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def _spatial_dims(volume, op, allowed=(2, 3)):
    if volume.ndim - 1 not in allowed:
        expected = " or ".join(f"{d + 1}" for d in allowed)
        raise ConfigError(
            "volume",
            f"{op} expects a volume (*spatial, C) of rank {expected} "
            f"({' or '.join(str(d) for d in allowed)} spatial axes). "
            f"Received: shape={volume.shape}",
        )
    return volume.ndim - 1


def _symmetric_pad(spatial, target):
    """Pad widths `(before, after)` per axis to reach `target`, as even as possible."""
    return [((t - s) // 2, (t - s) - (t - s) // 2) for s, t in zip(spatial, target, strict=True)]


def _call(predict_fn, batch, window):
    out = np.asarray(predict_fn(batch), dtype=np.float32)
    if out.ndim != batch.ndim or out.shape[:-1] != batch.shape[:-1]:
        raise ConfigError(
            "predict_fn",
            f"must map a batch {batch.shape} to (n, {', '.join(map(str, window))}, K) "
            f"on the same grid. Received: output shape={out.shape}",
        )
    return out


def sliding_window_predict(
    volume,
    predict_fn,
    *,
    window,
    overlap=0.5,
    batch_size=4,
    blend="gaussian",
    divisible_by=1,
    num_outputs=None,
    progress=None,
):
    """Predict a whole volume by blending overlapping windows.

    The volume is zero-padded (as evenly as possible on both sides) on every
    axis shorter than its effective window,
    `min(window, size rounded up to a multiple of divisible_by)`, so a volume
    smaller than the window is predicted in one window that the model can
    still downsample `log2(divisible_by)` times. Windows start at
    `window_starts(size, window, overlap)` on each axis (raster order), are
    predicted `batch_size` at a time, weighted by
    `gaussian_importance_map(window)` (or uniformly) and summed; the sum is
    divided by the summed weights and the padding is cropped off.

    Args:
        volume: np.ndarray `(D, H, W, C)` (3D) or `(H, W, C)` (2D).
        predict_fn: callable mapping a float32 numpy batch `(n, *window, C)`
            with `1 <= n <= batch_size` to `(n, *window, K)` (numpy or a
            tensor), e.g. `model.predict_on_batch` or a function returning
            softmax probabilities.
        window: int or tuple of ints (one per spatial axis), the window size.
            Each must be a multiple of `divisible_by`.
        overlap: float in `[0, 1)`, fraction of a window shared by
            neighbours. Default 0.5.
        batch_size: int >= 1, windows per call of `predict_fn`. Default 4.
        blend: `"gaussian"` (importance map, sigma = window / 8) or
            `"constant"` (plain average). Default `"gaussian"`.
        divisible_by: int >= 1, what every window size must be divisible by
            (`2**depth` for a U-Net of `depth` levels). Default 1.
        num_outputs: `None` or int, the expected number of output channels
            `K`; checked against the first output. Default `None` (take `K`
            from the first output).
        progress: `None` or callable `(done, total)`, called after each batch
            with the number of windows predicted so far and in total.

    Input shape:
        `(D, H, W, C)` or `(H, W, C)` (no batch axis: one case).

    Output shape:
        `(D, H, W, K)` or `(H, W, K)`, on the grid of the input.

    Returns:
        np.ndarray float32 of the output shape.

    Raises:
        ConfigError: `overlap` outside `[0, 1)`, a window size that is not a
            multiple of `divisible_by`, a volume of the wrong rank, an unknown
            `blend`, or a `predict_fn` whose output does not match its input
            grid or `num_outputs`.

    Example:
    ```python
    from ssl3d_keras.downstream.inference import sliding_window_predict
    probs = sliding_window_predict(
        case, model.predict_on_batch, window=64, overlap=0.5, divisible_by=16
    )  # case (155, 240, 240, 4) -> probs (155, 240, 240, num_classes)
    labels = probs.argmax(-1)
    ```
    """
    volume = np.asarray(volume)
    dim = _spatial_dims(volume, "sliding_window_predict")
    window = _as_tuple(window, dim, "window")
    _check_overlap(overlap)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("divisible_by", divisible_by)
    if blend not in BLENDS:
        raise ConfigError("blend", f"expected one of {BLENDS}. Received: blend={blend!r}")
    bad = [w for w in window if w % divisible_by]
    if bad:
        raise ConfigError(
            "window",
            f"every window size must be a multiple of divisible_by={divisible_by} "
            f"(the model downsamples that much). Received: window={window}",
        )

    spatial = volume.shape[:-1]
    window = tuple(
        min(w, math.ceil(s / divisible_by) * divisible_by)
        for w, s in zip(window, spatial, strict=True)
    )
    pad = _symmetric_pad(spatial, [max(s, w) for s, w in zip(spatial, window, strict=True)])
    padded = np.pad(volume.astype(np.float32, copy=False), [*pad, (0, 0)])
    starts = list(
        itertools.product(
            *(window_starts(s, w, overlap) for s, w in zip(padded.shape[:-1], window, strict=True))
        )
    )
    if blend == "gaussian":
        weights = gaussian_importance_map(window)[..., None]  # (*window, 1)
    else:
        weights = np.ones((*window, 1), np.float32)

    output = None  # (*padded_spatial, K), allocated once K is known
    total_weight = np.zeros((*padded.shape[:-1], 1), np.float32)
    for first in range(0, len(starts), batch_size):
        corners = starts[first : first + batch_size]
        regions = [
            tuple(slice(c, c + w) for c, w in zip(corner, window, strict=True))
            for corner in corners
        ]
        batch = np.stack([padded[region] for region in regions])  # (n, *window, C)
        predicted = _call(predict_fn, batch, window)  # (n, *window, K)
        if output is None:
            k = predicted.shape[-1]
            if num_outputs is not None and k != num_outputs:
                raise ConfigError(
                    "num_outputs",
                    f"predict_fn returned {k} channels, expected {num_outputs}. "
                    f"Received: output shape={predicted.shape}",
                )
            output = np.zeros((*padded.shape[:-1], k), np.float32)
        for region, prediction in zip(regions, predicted, strict=True):
            output[region] += prediction * weights
            total_weight[region] += weights
        if progress is not None:
            progress(first + len(corners), len(starts))

    output /= total_weight  # every voxel is in at least one window, all weights > 0
    crop = tuple(slice(before, before + s) for (before, _), s in zip(pad, spatial, strict=True))
    return output[crop]


def slicewise_predict(
    volume,
    predict_fn_2d,
    *,
    slice_axis=0,
    batch_size=16,
    window=None,
    overlap=0.5,
    divisible_by=1,
):
    """Predict a 3D volume slice by slice with a 2D model (the paper's 2D baseline).

    The volume is cut into 2D slices along `slice_axis`. With `window`, each
    slice is predicted by `sliding_window_predict` in 2D; without, whole
    slices (zero-padded symmetrically up to a multiple of `divisible_by`) go
    through `predict_fn_2d` `batch_size` at a time. The 2D outputs are
    stacked back in the original axis order.

    Args:
        volume: np.ndarray `(D, H, W, C)`.
        predict_fn_2d: callable mapping a float32 batch `(n, h, w, C)` to
            `(n, h, w, K)` (numpy or a tensor).
        slice_axis: int in `{0, 1, 2}`, the spatial axis to slice along.
            Default 0.
        batch_size: int >= 1, slices (or windows) per call. Default 16.
        window: `None` (whole slices) or int or pair of ints, the 2D window.
        overlap: float in `[0, 1)`, window overlap (only with `window`).
        divisible_by: int >= 1, what the 2D input sizes must be divisible by.

    Input shape:
        `(D, H, W, C)`.

    Output shape:
        `(D, H, W, K)`.

    Returns:
        np.ndarray float32 `(D, H, W, K)`.

    Raises:
        ConfigError: a volume that is not `(D, H, W, C)`, a bad `slice_axis`,
            or any error of `sliding_window_predict`.

    Example:
    ```python
    from ssl3d_keras.downstream.inference import slicewise_predict
    probs = slicewise_predict(case, model_2d.predict_on_batch, slice_axis=2, divisible_by=16)
    ```
    """
    volume = np.asarray(volume)
    _spatial_dims(volume, "slicewise_predict", allowed=(3,))
    if isinstance(slice_axis, bool) or slice_axis not in (0, 1, 2):
        raise ConfigError(
            "slice_axis", f"expected a spatial axis 0, 1 or 2. Received: slice_axis={slice_axis!r}"
        )
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("divisible_by", divisible_by)
    slices = np.moveaxis(volume, slice_axis, 0).astype(np.float32, copy=False)  # (S, h, w, C)

    if window is not None:
        outputs = [
            sliding_window_predict(
                one,
                predict_fn_2d,
                window=window,
                overlap=overlap,
                batch_size=batch_size,
                divisible_by=divisible_by,
            )
            for one in slices
        ]
        return np.moveaxis(np.stack(outputs), 0, slice_axis)

    _check_overlap(overlap)
    plane = slices.shape[1:3]
    pad = _symmetric_pad(plane, [math.ceil(s / divisible_by) * divisible_by for s in plane])
    padded = np.pad(slices, [(0, 0), *pad, (0, 0)])
    crop = tuple(slice(before, before + s) for (before, _), s in zip(pad, plane, strict=True))
    outputs = []
    for first in range(0, len(padded), batch_size):
        batch = padded[first : first + batch_size]  # (n, h', w', C)
        outputs.append(_call(predict_fn_2d, batch, batch.shape[1:3])[(slice(None), *crop)])
    return np.moveaxis(np.concatenate(outputs), 0, slice_axis)
