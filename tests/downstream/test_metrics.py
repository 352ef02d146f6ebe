"""Tests of the downstream metrics against hand-computed cases and brute-force numpy."""

import math

import numpy as np
import pytest

from ssl3d_keras.downstream import metrics
from ssl3d_keras.downstream.metrics import (
    BRATS_REGIONS,
    brats_regions,
    dice_per_class,
    hausdorff95_per_class,
    quadratic_weighted_kappa,
    region_scores,
    segmentation_scores,
    summarize,
)

# --------------------------------------------------------------------- Dice


def test_dice_2d_hand_case():
    pred = np.zeros((4, 4), int)
    pred[0:2, 0:2] = 1  # 4 voxels
    ref = np.zeros((4, 4), int)
    ref[0, 0:2] = 1  # 2 voxels, both inside pred
    ref[3, 3] = 2
    pred[3, 2:4] = 2  # class 2: |P|=2, |R|=1, overlap 1
    got = dice_per_class(pred, ref, [1, 2])
    assert got == pytest.approx({1: 2 * 2 / (4 + 2), 2: 2 * 1 / (2 + 1)})
    assert list(got) == [1, 2]


def test_dice_3d_hand_case():
    pred = np.zeros((5, 5, 5), np.uint8)
    ref = np.zeros((5, 5, 5), np.uint8)
    pred[0:2, 0:2, 0:2] = 1  # 8 voxels
    ref[1:3, 0:2, 0:2] = 1  # 8 voxels, 4 shared (slice 1)
    assert dice_per_class(pred, ref, [1])[1] == pytest.approx(2 * 4 / 16)


def test_dice_empty_cases():
    zeros = np.zeros((3, 3, 3), int)
    one = zeros.copy()
    one[1, 1, 1] = 1
    assert dice_per_class(zeros, zeros, [1]) == {1: 1.0}
    assert dice_per_class(zeros, zeros, [1], empty_value=0.0) == {1: 0.0}
    assert dice_per_class(one, zeros, [1]) == {1: 0.0}
    assert dice_per_class(zeros, one, [1]) == {1: 0.0}
    # class 2 absent from both while class 1 is scored normally
    assert dice_per_class(one, one, [1, 2]) == {1: 1.0, 2: 1.0}


def test_dice_symmetric(rng):
    a = rng.integers(0, 3, (8, 9, 10))
    b = rng.integers(0, 3, (8, 9, 10))
    assert dice_per_class(a, b, [0, 1, 2]) == pytest.approx(dice_per_class(b, a, [0, 1, 2]))
    # against a direct formula
    for c in (1, 2):
        p, r = a == c, b == c
        want = 2 * np.sum(p & r) / (p.sum() + r.sum())
        assert dice_per_class(a, b, [c])[c] == pytest.approx(want)


def test_dice_accepts_whole_number_floats_rejects_probabilities():
    a = np.array([[0.0, 1.0], [1.0, 2.0]])
    assert dice_per_class(a, a.astype(int), [1, 2]) == {1: 1.0, 2: 1.0}
    with pytest.raises(ValueError, match="integer label array"):
        dice_per_class(np.full((2, 2), 0.3), np.zeros((2, 2), int), [1])


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        dice_per_class(np.zeros((4, 4, 4), int), np.zeros((4, 4, 5), int), [1])
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(5, 4\)"):
        hausdorff95_per_class(np.zeros((4, 4), int), np.zeros((5, 4), int), [1], (1, 1))


# --------------------------------------------------------------------- HD95


def _surface_bruteforce(mask):
    """Voxels of the mask with a face neighbour outside the mask or outside the array."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = np.ones_like(mask)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    for axis in range(mask.ndim):
        for step in (-1, 1):
            interior &= np.roll(padded, step, axis=axis)[inner]
    return mask & ~interior


def _hd95_bruteforce(p, r, spacing):
    sp = np.argwhere(_surface_bruteforce(p)) * np.asarray(spacing)
    sr = np.argwhere(_surface_bruteforce(r)) * np.asarray(spacing)
    d = np.sqrt(((sp[:, None, :] - sr[None, :, :]) ** 2).sum(-1))  # all pairs
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def test_hd95_single_voxels_anisotropic():
    p = np.zeros((8, 8, 8), int)
    r = np.zeros((8, 8, 8), int)
    p[2, 4, 4] = 1
    r[5, 4, 4] = 1  # 3 voxels apart along axis 0
    assert hausdorff95_per_class(p, r, [1], (2.5, 1.0, 0.5)) == {1: pytest.approx(7.5)}
    r2 = np.zeros((8, 8, 8), int)
    r2[2, 4, 7] = 1  # 3 voxels apart along axis 2
    assert hausdorff95_per_class(p, r2, [1], (2.5, 1.0, 0.5))[1] == pytest.approx(1.5)


def test_hd95_identical_masks_zero(rng):
    a = rng.integers(0, 3, (10, 10, 10))
    assert hausdorff95_per_class(a, a, [1, 2], (1.0, 2.0, 3.0)) == {1: 0.0, 2: 0.0}


@pytest.mark.parametrize("axis, k, spacing", [(0, 2, (1.5, 1.0, 1.0)), (2, 1, (1.0, 1.0, 3.0))])
def test_hd95_shifted_cube(axis, k, spacing):
    p = np.zeros((16, 16, 16), int)
    p[4:10, 4:10, 4:10] = 1
    r = np.roll(p, k, axis=axis)
    got = hausdorff95_per_class(p, r, [1], spacing)[1]
    assert got == pytest.approx(k * spacing[axis])


def _blob(rng, shape, n_seeds):
    seeds = np.zeros(shape, bool)
    idx = tuple(rng.integers(2, s - 2, n_seeds) for s in shape)
    seeds[idx] = True
    return metrics.ndimage.binary_dilation(seeds, iterations=2)


@pytest.mark.parametrize("seed", range(4))
def test_hd95_matches_bruteforce_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    shape = (14, 12, 10)
    p = _blob(rng, shape, 3).astype(int)
    r = _blob(rng, shape, 3).astype(int)
    spacing = tuple(rng.uniform(0.5, 3.0, 3))
    got = hausdorff95_per_class(p, r, [1], spacing)[1]
    assert got > 0
    assert got == pytest.approx(_hd95_bruteforce(p == 1, r == 1, spacing))
    # swapping prediction and reference gives the same value (max of both directions)
    assert hausdorff95_per_class(r, p, [1], spacing)[1] == pytest.approx(got)


def test_hd95_mask_touching_the_border_2d():
    p = np.zeros((6, 7), int)
    r = np.zeros((6, 7), int)
    p[0:3, 0:7] = 1  # touches three sides of the array
    r[0:4, 1:6] = 1
    got = hausdorff95_per_class(p, r, [1], (1.0, 2.0))[1]
    assert got == pytest.approx(_hd95_bruteforce(p == 1, r == 1, (1.0, 2.0)))


def test_hd95_empty_conventions():
    shape = (6, 8, 10)
    spacing = (2.0, 1.0, 0.5)
    zeros = np.zeros(shape, int)
    one = zeros.copy()
    one[3, 3, 3] = 1
    diagonal = math.sqrt(12.0**2 + 8.0**2 + 5.0**2)
    got = hausdorff95_per_class(zeros, zeros, [1], spacing)
    assert math.isnan(got[1])
    assert hausdorff95_per_class(zeros, zeros, [1], spacing, empty_value=0.0) == {1: 0.0}
    assert hausdorff95_per_class(one, zeros, [1], spacing)[1] == pytest.approx(diagonal)
    assert hausdorff95_per_class(zeros, one, [1], spacing)[1] == pytest.approx(diagonal)
    # the BraTS worst case
    brats = np.zeros((240, 240, 155), np.uint8)
    brats[0, 0, 0] = 1
    worst = hausdorff95_per_class(brats, np.zeros_like(brats), [1], (1, 1, 1))[1]
    assert worst == pytest.approx(373.13, abs=0.01)


def test_hd95_bad_spacing():
    a = np.zeros((4, 4, 4), int)
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95_per_class(a, a, [1], (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95_per_class(a, a, [1], (1.0, 0.0, 1.0))


# ------------------------------------------------------------------- BraTS


def _brats_label():
    label = np.zeros((4, 4, 4), np.int16)
    label[1, 1, 1] = 1  # necrotic core
    label[1, 1, 2] = 2  # oedema
    label[1, 2, 1] = 3  # enhancing
    label[2, 2, 2] = 2
    return label


def test_brats_regions_hand_built():
    label = _brats_label()
    regions = brats_regions(label)
    assert set(regions) == {"WT", "TC", "ET"}
    want_wt = np.zeros(label.shape, bool)
    want_wt[1, 1, 1] = want_wt[1, 1, 2] = want_wt[1, 2, 1] = want_wt[2, 2, 2] = True
    want_tc = np.zeros(label.shape, bool)
    want_tc[1, 1, 1] = want_tc[1, 2, 1] = True
    want_et = np.zeros(label.shape, bool)
    want_et[1, 2, 1] = True
    np.testing.assert_array_equal(regions["WT"], want_wt)
    np.testing.assert_array_equal(regions["TC"], want_tc)
    np.testing.assert_array_equal(regions["ET"], want_et)
    assert regions["WT"].dtype == bool


def test_region_scores_tuple_and_callable_agree():
    ref = _brats_label()
    pred = ref.copy()
    pred[1, 1, 1] = 2  # core predicted as oedema: WT perfect, TC half, ET perfect
    spacing = (1.0, 1.0, 1.0)
    by_tuple = region_scores(pred, ref, BRATS_REGIONS, spacing)
    by_fn = region_scores(
        pred, ref, {n: (lambda x, n=n: brats_regions(x)[n]) for n in BRATS_REGIONS}, spacing
    )
    assert by_tuple == by_fn
    assert by_tuple["WT"] == {"dice": 1.0, "hd95": 0.0}
    assert by_tuple["TC"]["dice"] == pytest.approx(2 * 1 / (1 + 2))
    # reference TC surface distances to the prediction are (1, 0) (1 voxel from (1,2,1) to
    # (1,1,1)), prediction to reference (0,): max of the 95th percentiles is 0.95 (linear)
    assert by_tuple["TC"]["hd95"] == pytest.approx(0.95)
    assert by_tuple["ET"] == {"dice": 1.0, "hd95": 0.0}


def test_segmentation_scores_names_and_regions():
    ref = _brats_label()
    pred = ref.copy()
    pred[2, 2, 2] = 0
    spacing = (1.0, 1.0, 1.0)
    plain = segmentation_scores(pred, ref, classes=[1, 2, 3], spacing=spacing)
    assert set(plain) == {"dice", "hd95"}
    assert list(plain["dice"]) == ["1", "2", "3"]
    assert plain["dice"]["2"] == pytest.approx(2 * 1 / (1 + 2))
    assert plain["dice"]["1"] == 1.0
    names = {1: "core", 2: "oedema", 3: "enhancing"}
    named = segmentation_scores(
        pred, ref, classes=[1, 2, 3], spacing=spacing, class_names=names, brats=True
    )
    assert named["dice"] == {names[int(k)]: v for k, v in plain["dice"].items()}
    assert named["hd95"]["oedema"] == plain["hd95"]["2"]
    assert named["regions"] == region_scores(pred, ref, BRATS_REGIONS, spacing)
    with pytest.raises(ValueError, match="class_names"):
        segmentation_scores(pred, ref, classes=[1, 2], spacing=spacing, class_names={1: "a"})


# ------------------------------------------------------------------- kappa


def _kappa_reference(a, b, k):
    """Quadratic weighted kappa from its definition, loops and all."""
    n = len(a)
    observed = np.zeros((k, k))
    for i, j in zip(a, b, strict=True):
        observed[i, j] += 1
    hist_a = np.array([np.sum(a == i) for i in range(k)])
    hist_b = np.array([np.sum(b == j) for j in range(k)])
    expected = np.array([[hist_a[i] * hist_b[j] / n for j in range(k)] for i in range(k)])
    weights = np.array([[(i - j) ** 2 / (k - 1) ** 2 for j in range(k)] for i in range(k)])
    return 1 - (weights * observed).sum() / (weights * expected).sum()


@pytest.mark.parametrize("seed", range(5))
def test_kappa_matches_definition(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, 50)
    b = np.clip(a + rng.integers(-2, 3, 50), 0, 4)  # correlated ratings
    assert quadratic_weighted_kappa(a, b, 5) == pytest.approx(_kappa_reference(a, b, 5))
    c = rng.integers(0, 5, 50)
    assert quadratic_weighted_kappa(a, c, 5) == pytest.approx(_kappa_reference(a, c, 5))


def test_kappa_perfect_and_hand_cases():
    assert quadratic_weighted_kappa([0, 1, 2, 3, 4], [0, 1, 2, 3, 4]) == 1.0
    # 2 grades: O = [[1, 1], [0, 2]], histograms (2, 2) and (1, 3), E = [[.5, 1.5], [.5, 1.5]],
    # W = [[0, 1], [1, 0]]: kappa = 1 - 1 / 2 = 0.5 (Cohen: po = .75, pe = .5 -> .25 / .5).
    assert quadratic_weighted_kappa([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.5)
    # 3 grades: O has (0,0), (1,2), (2,2); sum W*O = 1/4; E[:, j] = (1/3, 0, 2/3);
    # sum W*E = 2/3 + 1/4 + 1/3 = 5/4: kappa = 1 - (1/4) / (5/4) = 0.8.
    assert quadratic_weighted_kappa([0, 1, 2], [0, 2, 2]) == pytest.approx(0.8)
    # full disagreement on two grades is -1
    assert quadratic_weighted_kappa([0, 1], [1, 0]) == pytest.approx(-1.0)


def test_kappa_num_classes_matters_and_degenerate_cases():
    # grades 0..2 but K=5: the weight normalisation cancels, the value is unchanged
    assert quadratic_weighted_kappa([0, 1, 2], [0, 2, 2], num_classes=5) == pytest.approx(0.8)
    # all ratings one and the same grade: 0/0, agreement -> 1.0
    assert quadratic_weighted_kappa([2, 2, 2], [2, 2, 2], num_classes=5) == 1.0
    assert quadratic_weighted_kappa([0, 0], [0, 0]) == 1.0
    with pytest.raises(ValueError, match="0..2"):
        quadratic_weighted_kappa([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="equal length"):
        quadratic_weighted_kappa([0, 1], [0])


# --------------------------------------------------------------- summarize


def test_summarize_ignores_nan():
    per_case = [
        {"dice": 0.8, "hd95": 2.0},
        {"dice": 0.6, "hd95": math.nan},
        {"dice": math.nan, "hd95": 4.0},
        {"dice": 0.7},  # missing key counts as NaN
    ]
    out = summarize(per_case)
    assert out["dice"] == pytest.approx(
        {"mean": 0.7, "sd": np.std([0.8, 0.6, 0.7], ddof=1), "median": 0.7, "n": 3}
    )
    assert out["hd95"] == pytest.approx({"mean": 3.0, "sd": math.sqrt(2.0), "median": 3.0, "n": 2})


def test_summarize_single_and_all_nan_and_nested():
    out = summarize([{"a": 0.5, "b": math.nan}])
    assert out["a"] == {"mean": 0.5, "sd": 0.0, "median": 0.5, "n": 1}
    assert out["b"]["n"] == 0 and math.isnan(out["b"]["mean"]) and math.isnan(out["b"]["sd"])
    nested = summarize([{"dice": {"WT": 0.9}}, {"dice": {"WT": 0.7}}])
    assert nested["dice/WT"] == pytest.approx(
        {"mean": 0.8, "sd": math.sqrt(0.02), "median": 0.8, "n": 2}
    )


def test_module_does_not_import_tensorflow():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(metrics))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert imported <= {"math", "collections", "numpy", "scipy"}
