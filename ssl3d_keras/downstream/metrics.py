"""Scores of the downstream evaluation: Dice, HD95, BraTS regions, quadratic kappa.

Segmentation scores are computed on one whole case at a time (a label array
of shape `(D, H, W)` or `(H, W)`, no batch or channel axis), per class, and
background is never scored unless the caller asks for it. The old code pooled
voxels over a batch and averaged the background in; do not do that: score
each case, then `summarize` the per-case values.

Conventions (chosen here, so every number in a report means the same thing):

- **Dice** `= 2|P ∩ R| / (|P| + |R|)`. When a class is absent from both the
  prediction and the reference the value is `empty_value`, 1.0 by default:
  nothing to find and nothing predicted is a correct answer. When exactly one
  is empty Dice is 0.
- **HD95** (the BraTS / MONAI convention), in mm. The surface of a mask is
  the mask minus its `scipy.ndimage.binary_erosion` with the face-connected
  structuring element `generate_binary_structure(ndim, 1)` (6-neighbourhood in
  3D); voxels on the border of the array count as surface (erosion border
  value 0). The distance of every surface voxel of P to the nearest surface
  voxel of R is read from `distance_transform_edt(~surface_R,
  sampling=spacing)`, and the same from R to P. HD95 is the **maximum of the
  two directed 95th percentiles** (`np.percentile`, linear interpolation),
  as MONAI's `compute_hausdorff_distance(percentile=95)` does by default, not
  the percentile of the pooled distances.
- HD95 when both masks are empty: `empty_value`, NaN by default (undefined;
  `summarize` leaves NaN out of the mean and of `n`).
- HD95 when exactly one mask is empty: the maths says +inf; we return the
  diagonal of the array in mm, `sqrt(sum((shape * spacing)**2))`, the largest
  distance the volume allows. This is the BraTS challenge's worst-case
  convention (373.13 mm for its 240 x 240 x 155 volume at 1 mm), and it keeps
  means finite.
- **Quadratic weighted kappa** (APTOS 2019 grading): Cohen's kappa with
  weights `(i - j)**2 / (K - 1)**2` over the ratings `0..K-1`.
"""

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from scipy import ndimage

__all__ = [
    "BRATS_REGIONS",
    "brats_regions",
    "dice_per_class",
    "hausdorff95_per_class",
    "quadratic_weighted_kappa",
    "region_scores",
    "segmentation_scores",
    "summarize",
]

# BraTS labels after reading: 0 background, 1 necrotic / non-enhancing core,
# 2 oedema, 3 enhancing tumour (the file's label 4 remapped to 3).
BRATS_REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


# ---------------------------------------------------------------- validation


def _label_array(x, name):
    """`x` as an integer numpy array; floats must hold whole numbers (NIfTI reads)."""
    x = np.asarray(x)
    if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
        return x
    if np.issubdtype(x.dtype, np.floating) and np.all(np.isfinite(x)) and np.all(x == np.round(x)):
        return x.astype(np.int64)
    raise ValueError(
        f"`{name}` must be an integer label array (take the argmax of probabilities first). "
        f"Received: dtype={x.dtype}, shape={x.shape}"
    )


def _check_pair(prediction, reference):
    prediction = _label_array(prediction, "prediction")
    reference = _label_array(reference, "reference")
    if prediction.shape != reference.shape:
        raise ValueError(
            "`prediction` and `reference` must have the same shape. "
            f"Received: prediction.shape={prediction.shape}, reference.shape={reference.shape}"
        )
    if prediction.ndim not in (2, 3):
        raise ValueError(
            "expected one 2D or 3D case without batch or channel axis. "
            f"Received: shape={prediction.shape}"
        )
    return prediction, reference


def _check_classes(classes):
    classes = list(classes)
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, int | np.integer):
            raise ValueError(f"`classes` must be integers. Received: classes={classes}")
    return [int(c) for c in classes]


def _check_spacing(spacing, ndim):
    spacing = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if spacing.size != ndim or not np.all(spacing > 0) or not np.all(np.isfinite(spacing)):
        raise ValueError(
            f"`spacing` must hold {ndim} positive voxel sizes in mm, one per axis. "
            f"Received: spacing={tuple(spacing.tolist())}"
        )
    return spacing


# ------------------------------------------------------------ binary scores


def _dice(p, r, empty_value):
    """Dice of two boolean masks of one shape."""
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    if total == 0:
        return float(empty_value)
    return 2.0 * int(np.count_nonzero(p & r)) / total


def _surface(mask):
    """Boundary voxels: the mask minus its face-connected erosion (array border is outside)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _hd95(p, r, spacing, empty_value):
    """HD95 in mm of two boolean masks of one shape; `spacing` already checked."""
    p_any, r_any = bool(p.any()), bool(r.any())
    if not p_any and not r_any:
        return float(empty_value)
    if not p_any or not r_any:
        return float(np.sqrt(np.sum((np.asarray(p.shape) * spacing) ** 2)))
    # Crop to the bounding box of both masks: every surface voxel lies inside,
    # so the distances (to the nearest surface voxel) are unchanged, and the
    # erosion sees the same outside (zeros) as on the whole array.
    coords = np.argwhere(p | r)
    box = tuple(slice(lo, hi + 1) for lo, hi in zip(coords.min(0), coords.max(0), strict=True))
    surface_p, surface_r = _surface(p[box]), _surface(r[box])
    to_r = ndimage.distance_transform_edt(~surface_r, sampling=spacing)[surface_p]
    to_p = ndimage.distance_transform_edt(~surface_p, sampling=spacing)[surface_r]
    return float(max(np.percentile(to_r, 95), np.percentile(to_p, 95)))


# ------------------------------------------------------------------- public


def dice_per_class(prediction, reference, classes, *, empty_value=1.0):
    """Dice coefficient of each requested class on one case.

    `Dice = 2|P ∩ R| / (|P| + |R|)` with `P = (prediction == c)` and
    `R = (reference == c)`.

    Args:
        prediction: integer label array (floats holding whole numbers are
            accepted, as NIfTI readers return them).
        reference: integer label array of the same shape.
        classes: iterable of int, the classes to score, normally only the
            foreground ones, e.g. `[1, 2]`.
        empty_value: float, the value when a class is absent from both arrays.
            Default 1.0: nothing to find and nothing predicted is correct.
            When a class is absent from exactly one array, Dice is 0.

    Input shape:
        `(D, H, W)` or `(H, W)` for both arrays: one case, no batch or channel
        axis.

    Returns:
        dict `{class: dice}` with int keys in the order of `classes`, float
        values in `[0, 1]` (or `empty_value`).

    Raises:
        ValueError: the shapes differ (both are named), an array is not a
            2D/3D label array, or a class is not an int.

    Example:

    >>> from ssl3d_keras.downstream.metrics import dice_per_class
    >>> dice_per_class(np.array([[1, 1], [1, 1]]), np.array([[1, 1], [0, 0]]), [1])
    {1: 0.6666666666666666}
    """
    prediction, reference = _check_pair(prediction, reference)
    return {c: _dice(prediction == c, reference == c, empty_value) for c in _check_classes(classes)}


def hausdorff95_per_class(prediction, reference, classes, spacing, *, empty_value=math.nan):
    """95th-percentile symmetric surface Hausdorff distance (mm) of each class on one case.

    Surfaces are the masks minus their face-connected erosion; HD95 is the
    maximum of the two directed 95th percentiles of surface-to-surface
    distances (MONAI's default). See the module docstring for the full
    convention.

    Args:
        prediction: integer label array.
        reference: integer label array of the same shape.
        classes: iterable of int, the classes to score, e.g. `[1, 2]`.
        spacing: sequence of `ndim` positive floats, voxel size in mm along
            each axis of the arrays (the same axis order).
        empty_value: float, the value when a class is absent from both arrays.
            Default NaN (undefined; left out of `summarize` means). When a class
            is absent from exactly one array the value is the array's diagonal
            in mm, `sqrt(sum((shape * spacing)**2))` (BraTS worst case), not +inf.

    Input shape:
        `(D, H, W)` or `(H, W)` for both arrays: one case, no batch or channel
        axis.

    Returns:
        dict `{class: hd95_mm}` with int keys in the order of `classes`.

    Raises:
        ValueError: the shapes differ, `spacing` does not hold `ndim` positive
            numbers, or a class is not an int.

    Example:

    >>> p = np.zeros((8, 8, 8), int); p[2, 4, 4] = 1
    >>> r = np.zeros((8, 8, 8), int); r[5, 4, 4] = 1
    >>> hausdorff95_per_class(p, r, [1], spacing=(2.5, 1.0, 1.0))
    {1: 7.5}
    """
    prediction, reference = _check_pair(prediction, reference)
    spacing = _check_spacing(spacing, prediction.ndim)
    return {
        c: _hd95(prediction == c, reference == c, spacing, empty_value)
        for c in _check_classes(classes)
    }


def brats_regions(label):
    """Boolean masks of the BraTS evaluation regions of one label array.

    Labels: 0 background, 1 necrotic / non-enhancing tumour core, 2 oedema,
    3 enhancing tumour (label 4 of the files remapped to 3 on reading).

    Args:
        label: integer label array.

    Input shape:
        `(D, H, W)` (any shape works).

    Returns:
        dict with keys `"WT"` (whole tumour, {1, 2, 3}), `"TC"` (tumour core,
        {1, 3}) and `"ET"` (enhancing tumour, {3}); each a boolean array of
        the shape of `label`.

    Example:

    >>> brats_regions(np.array([0, 1, 2, 3]))["TC"]
    array([False,  True, False,  True])
    """
    label = _label_array(label, "label")
    return {name: np.isin(label, classes) for name, classes in BRATS_REGIONS.items()}


def region_scores(prediction, reference, regions, spacing):
    """Dice and HD95 of named regions (unions of classes) on one case.

    Args:
        prediction: integer label array.
        reference: integer label array of the same shape.
        regions: mapping name -> either a function `label -> bool mask` or a
            tuple of classes whose union is the region, e.g. `BRATS_REGIONS`
            (`{"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}`).
        spacing: sequence of `ndim` positive floats, voxel size in mm.

    Input shape:
        `(D, H, W)` or `(H, W)` for both arrays.

    Returns:
        dict `{name: {"dice": float, "hd95": float}}` with the empty-mask
        conventions of `dice_per_class` and `hausdorff95_per_class` (Dice 1.0
        and HD95 NaN when the region is absent from both).

    Raises:
        ValueError: the shapes differ, `spacing` is invalid, or a region
            function returns a mask of another shape.

    Example:

    >>> reference = np.zeros((8, 8, 8), int)
    >>> reference[2:6, 2:6, 2:6] = 2
    >>> reference[3:5, 3:5, 3:5] = 3
    >>> prediction = np.where(reference > 0, 2, 0)  # the oedema right, the enhancing core missed
    >>> scores = region_scores(prediction, reference, BRATS_REGIONS, (1.0, 1.0, 1.0))
    >>> scores["WT"]["dice"], scores["ET"]["dice"]
    (1.0, 0.0)
    """
    prediction, reference = _check_pair(prediction, reference)
    spacing = _check_spacing(spacing, prediction.ndim)
    out = {}
    for name, region in regions.items():
        if callable(region):
            p, r = _region_mask(region, prediction, name), _region_mask(region, reference, name)
        else:
            classes = _check_classes(region)
            p, r = np.isin(prediction, classes), np.isin(reference, classes)
        out[name] = {"dice": _dice(p, r, 1.0), "hd95": _hd95(p, r, spacing, math.nan)}
    return out


def _region_mask(fn: Callable, label, name):
    mask = np.asarray(fn(label), dtype=bool)
    if mask.shape != label.shape:
        raise ValueError(
            f"region '{name}' must return a mask of the label's shape {label.shape}. "
            f"Received: shape={mask.shape}"
        )
    return mask


def segmentation_scores(prediction, reference, *, classes, spacing, class_names=None, brats=False):
    """Every segmentation score of one case: per-class Dice and HD95, BraTS regions.

    Args:
        prediction: integer label array.
        reference: integer label array of the same shape.
        classes: iterable of int, the classes to score (foreground only,
            e.g. `[1, 2]` for the pancreas task).
        spacing: sequence of `ndim` positive floats, voxel size in mm.
        class_names: optional dict int -> str naming every class in
            `classes` (e.g. `{1: "pancreas", 2: "tumour"}`); default: the class
            index as str.
        brats: bool, also score the BraTS regions WT, TC, ET. Default `False`.

    Input shape:
        `(D, H, W)` or `(H, W)` for both arrays: one case.

    Returns:
        dict `{"dice": {name: float}, "hd95": {name: float}}`, plus
        `"regions": {"WT": {"dice": .., "hd95": ..}, ...}` when `brats`.
        `summarize` takes a list of these directly.

    Raises:
        ValueError: as `dice_per_class` and `hausdorff95_per_class`, or
            `class_names` misses a scored class.

    Example:

    >>> ref = np.zeros((6, 6, 6), int)
    >>> ref[1:5, 1:5, 1:5] = 1
    >>> ref[2:4, 2:4, 2:4] = 2
    >>> pred = ref.copy()
    >>> pred[2:4, 2:4, 2] = 1  # half the tumour called pancreas
    >>> scores = segmentation_scores(pred, ref, classes=[1, 2], spacing=(0.8, 0.8, 2.5),
    ...                              class_names={1: "pancreas", 2: "tumour"})
    >>> round(scores["dice"]["tumour"], 3)
    0.667
    """
    classes = _check_classes(classes)
    if class_names is None:
        names = {c: str(c) for c in classes}
    else:
        missing = [c for c in classes if c not in class_names]
        if missing:
            raise ValueError(
                f"`class_names` has no name for classes {missing}. "
                f"Received: class_names={dict(class_names)}"
            )
        names = {c: str(class_names[c]) for c in classes}
    dice = dice_per_class(prediction, reference, classes)
    hd95 = hausdorff95_per_class(prediction, reference, classes, spacing)
    out = {
        "dice": {names[c]: v for c, v in dice.items()},
        "hd95": {names[c]: v for c, v in hd95.items()},
    }
    if brats:
        out["regions"] = region_scores(prediction, reference, BRATS_REGIONS, spacing)
    return out


def quadratic_weighted_kappa(y_true, y_pred, num_classes=None):
    """Cohen's kappa with quadratic weights, the APTOS 2019 grading metric.

    `kappa = 1 - sum(W * O) / sum(W * E)` with `O[i, j]` the number of
    samples rated `i` by `y_true` and `j` by `y_pred`, `E` the outer product
    of the two rating histograms divided by the number of samples, and
    `W[i, j] = (i - j)**2 / (K - 1)**2`. Ratings are the integers `0..K-1`;
    the weights use the rating values, so a grade absent from both inputs
    still counts in the distances (scikit-learn's `cohen_kappa_score`
    re-indexes the labels present instead and can then differ).

    When `sum(W * E) == 0` (all ratings of both inputs are one and the same
    grade, or `K == 1`) kappa is 0/0; we return 1.0 if the ratings agree
    exactly and 0.0 otherwise.

    Args:
        y_true: integer ratings, any shape (flattened).
        y_pred: integer ratings of the same size.
        num_classes: int, number of grades `K` (5 for APTOS). Default:
            `max(y_true, y_pred) + 1`.

    Returns:
        float, 1.0 for perfect agreement, 0 for chance agreement, negative
        below chance.

    Raises:
        ValueError: empty or unequal-length inputs, non-integer or negative
            ratings, or a rating `>= num_classes`.

    Example:

    >>> quadratic_weighted_kappa([0, 0, 1, 1], [0, 1, 1, 1])
    0.5
    """
    y_true = _label_array(y_true, "y_true").reshape(-1).astype(np.int64)
    y_pred = _label_array(y_pred, "y_pred").reshape(-1).astype(np.int64)
    if y_true.size != y_pred.size or y_true.size == 0:
        raise ValueError(
            "`y_true` and `y_pred` must be non-empty and of equal length. "
            f"Received: len(y_true)={y_true.size}, len(y_pred)={y_pred.size}"
        )
    low, high = min(y_true.min(), y_pred.min()), max(y_true.max(), y_pred.max())
    k = int(high) + 1 if num_classes is None else int(num_classes)
    if low < 0 or high >= k:
        raise ValueError(
            f"ratings must lie in 0..{k - 1}. "
            f"Received: min={int(low)}, max={int(high)}, num_classes={num_classes}"
        )
    observed = np.zeros((k, k), np.float64)
    np.add.at(observed, (y_true, y_pred), 1.0)
    expected = np.outer(observed.sum(1), observed.sum(0)) / y_true.size
    grades = np.arange(k)
    weights = (grades[:, None] - grades[None, :]) ** 2 / max(k - 1, 1) ** 2
    denominator = float(np.sum(weights * expected))
    if denominator == 0.0:
        return 1.0 if np.array_equal(y_true, y_pred) else 0.0
    return 1.0 - float(np.sum(weights * observed)) / denominator


def _flatten(scores: Mapping, prefix=""):
    for key, value in scores.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}/")
        else:
            yield name, value


def summarize(per_case: Iterable[Mapping]):
    """Mean, standard deviation, median and count of each score over cases.

    NaN values (e.g. HD95 of a class absent from prediction and reference) are
    left out; a key missing from a case counts as NaN. Nested dicts such as
    the output of `segmentation_scores` are flattened with `/`, e.g.
    `"dice/tumour"`, `"regions/WT/hd95"`.

    Args:
        per_case: list of dicts `{name: float}` (or nested dicts), one per case.

    Returns:
        dict `{name: {"mean": float, "sd": float, "median": float, "n": int}}`
        in first-seen key order; `sd` uses `ddof=1` when `n > 1` and is 0.0
        when `n == 1`; with `n == 0` mean, sd and median are NaN.

    Example:

    >>> summarize([{"dice": 0.8}, {"dice": 0.6}, {"dice": float("nan")}])["dice"]
    {'mean': 0.7, 'sd': 0.1414..., 'median': 0.7, 'n': 2}
    """
    cases = [dict(_flatten(case)) for case in per_case]
    keys = list(dict.fromkeys(key for case in cases for key in case))
    out = {}
    for key in keys:
        values = np.array([case.get(key, math.nan) for case in cases], dtype=np.float64)
        values = values[~np.isnan(values)]
        n = int(values.size)
        if n == 0:
            out[key] = {"mean": math.nan, "sd": math.nan, "median": math.nan, "n": 0}
            continue
        out[key] = {
            "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if n > 1 else 0.0,
            "median": float(np.median(values)),
            "n": n,
        }
    return out
