"""Contrastive predictive coding: grid geometry, patches, gathering and losses."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras import tasks
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.tasks.cpc import pyramid_cells
from ssl3d_keras.testing import tasks as contract

TINY = {"depth": 1, "base_filters": 4, "dropout": 0.0, "norm": "none"}
SMALL = {"code_size": 6, "context_units": 5}


def make_task(dim, **kwargs):
    shape = (32,) * dim + (1,)
    return tasks.get("cpc", input_shape=shape, encoder=dict(TINY), **{**SMALL, **kwargs})


def random_volume(dim, seed=0):
    return np.random.default_rng(seed).normal(size=(32,) * dim + (1,)).astype(np.float32)


def batch_of(task, n, training=True):
    volumes = [random_volume(task.dim, i) for i in range(n)]
    pairs = [
        task.transform(v, tf.constant([i, 3]), training=training) for i, v in enumerate(volumes)
    ]
    return tf.stack([p[0] for p in pairs]), tf.stack([p[1] for p in pairs])


def np_log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# --- grid geometry ---------------------------------------------------------------------------


def test_pyramid_3d_grid4_is_the_old_codes_10_steps():
    context, targets = pyramid_cells(4, 3)
    assert context.shape == (16, 10) and targets.shape == (16, 2)

    def flat(*cell):
        return cell[0] * 16 + cell[1] * 4 + cell[2]

    # Corner column (0, 0): row 0's 3 x 3 block around it, mirror-padded (index -1 -> 1).
    block = [flat(0, y, z) for y in (1, 0, 1) for z in (1, 0, 1)]
    assert context[0].tolist() == block + [flat(1, 0, 0)]
    assert targets[0].tolist() == [flat(2, 0, 0), flat(3, 0, 0)]
    # Interior column (1, 2) is column 1 * 4 + 2 = 6; index 4 mirrors to 2.
    block = [flat(0, y, z) for y in (0, 1, 2) for z in (1, 2, 3)]
    assert context[6].tolist() == block + [flat(1, 1, 2)]
    assert targets[6].tolist() == [flat(2, 1, 2), flat(3, 1, 2)]
    # Far corner (3, 3): 4 mirrors to 2.
    block = [flat(0, y, z) for y in (2, 3, 2) for z in (2, 3, 2)]
    assert context[15].tolist() == block + [flat(1, 3, 3)]


def test_pyramid_2d_overlapping_skips_the_row_that_overlaps_the_context():
    context, targets = pyramid_cells(5, 2, skip_rows=1)
    assert context.shape == (5, 4) and targets.shape == (5, 2)
    assert context[0].tolist() == [1, 0, 1, 5]  # row 0 cols (1, 0, 1), then row 1 col 0
    assert context[2].tolist() == [1, 2, 3, 7]
    assert targets[2].tolist() == [17, 22]  # rows 3 and 4 (row 2 skipped)


def test_pyramid_larger_grid_grows_the_pyramid():
    # g = 7, 2D: rows 0, 1, 2 are context with 5, 3, 1 cells (the old 2D code's 9 steps).
    context, targets = pyramid_cells(7, 2, skip_rows=1)
    assert context.shape == (7, 9)
    assert context[3].tolist() == [1, 2, 3, 4, 5, 9, 10, 11, 17]
    assert targets[3].tolist() == [4 * 7 + 3, 5 * 7 + 3, 6 * 7 + 3]


@pytest.mark.parametrize("grid, skip", [(1, 0), (2, 1)])
def test_pyramid_without_a_row_to_predict_is_a_config_error(grid, skip):
    with pytest.raises(ConfigError, match=f"grid={grid}"):
        pyramid_cells(grid, 3, skip_rows=skip)


# --- transform -------------------------------------------------------------------------------


def test_3d_eval_patches_are_the_non_overlapping_grid():
    task = make_task(3)
    volume = random_volume(3)
    inputs, negatives = task.transform(volume, tf.constant([1, 2]), training=False)
    assert inputs.shape == (4, 4, 4, 8, 8, 8, 1) and inputs.dtype == tf.float32
    for i, j, k in itertools.product(range(4), repeat=3):
        expected = volume[8 * i : 8 * i + 8, 8 * j : 8 * j + 8, 8 * k : 8 * k + 8]
        np.testing.assert_array_equal(inputs[i, j, k].numpy(), expected)
    assert negatives.shape == (16,) and negatives.dtype == tf.int32


def test_2d_patches_overlap_by_half():
    task = make_task(2)  # grid 5 by default: stride 32 // 6 = 5, patch 10, start (32 - 30) // 2
    volume = random_volume(2)
    inputs, negatives = task.transform(volume, tf.constant([1, 2]), training=False)
    assert inputs.shape == (5, 5, 10, 10, 1)
    for i, j in itertools.product(range(5), repeat=2):
        expected = volume[1 + 5 * i : 11 + 5 * i, 1 + 5 * j : 11 + 5 * j]
        np.testing.assert_array_equal(inputs[i, j].numpy(), expected)
    np.testing.assert_array_equal(inputs[0, 0, 5:], inputs[1, 0, :5])  # 50 % overlap
    assert negatives.shape == (5,)


def test_training_patches_are_flipped_crops_padded_back():
    task = make_task(3)
    volume = random_volume(3)
    clean, _ = task.transform(volume, tf.constant([4, 4]), training=False)
    augmented, _ = task.transform(volume, tf.constant([4, 4]), training=True)
    crop = 7  # 7/8 of an 8-voxel patch, padded back with (0, 1) zeros per axis
    flips_seen = set()
    for i, j, k in itertools.product(range(4), repeat=3):
        patch, original = augmented[i, j, k].numpy(), clean[i, j, k].numpy()
        assert not patch[crop:].any() and not patch[:, crop:].any() and not patch[:, :, crop:].any()
        matches = []
        for flips in itertools.product((False, True), repeat=3):
            flipped = (
                np.flip(original, [a for a in range(3) if flips[a]]) if any(flips) else original
            )
            for start in itertools.product((0, 1), repeat=3):
                window = flipped[tuple(slice(s, s + crop) for s in start)]
                if np.array_equal(window, patch[:crop, :crop, :crop]):
                    matches.append(flips)
        assert matches, f"patch {(i, j, k)} is not a flipped crop of its cell"
        flips_seen.add(matches[0])
    assert len(flips_seen) > 2  # flips vary per patch


def test_augment_off_keeps_training_patches_clean():
    task = make_task(3, augment=False)
    volume = random_volume(3)
    clean, _ = task.transform(volume, tf.constant([4, 4]), training=False)
    train, _ = task.transform(volume, tf.constant([4, 4]), training=True)
    np.testing.assert_array_equal(clean.numpy(), train.numpy())


def test_negatives_are_other_columns_of_the_same_scan():
    task = make_task(3)
    volume = random_volume(3)
    seen = set()
    for s in range(20):
        _, negatives = task.transform(volume, tf.constant([s, 0]), training=False)
        negatives = negatives.numpy()
        assert ((negatives >= 0) & (negatives < 16)).all()
        assert (negatives != np.arange(16)).all()
        seen.update(negatives.tolist())
    assert len(seen) == 16


# --- network and losses ----------------------------------------------------------------------


def test_targets_are_the_codes_of_the_cells_below_each_column():
    task = make_task(3)
    inputs, _ = batch_of(task, 2, training=False)
    outputs = task(inputs, training=False)
    assert outputs["predictions"].shape == (2, 16, 2, 6)
    assert outputs["targets"].shape == (2, 16, 2, 6)
    # Independent: encode every cell on its own and look the target cells up.
    cells = tf.reshape(inputs, (2 * 64, 8, 8, 8, 1))
    codes = (
        task.code_layer(task.pool(task.encoder(cells, training=False))).numpy().reshape(2, 64, 6)
    )
    _, target_cells = pyramid_cells(4, 3)
    expected = codes[:, target_cells]  # (2, 16, 2, 6)
    np.testing.assert_allclose(outputs["targets"].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_info_nce_loss_matches_numpy_over_batch_and_positions():
    task = make_task(3)
    inputs, target = batch_of(task, 2)
    outputs = task(inputs, training=False)
    loss, accuracy = task.loss_and_accuracy(target, outputs)
    p = outputs["predictions"].numpy().astype(np.float64)  # (2, 16, 2, 6)
    t = outputs["targets"].numpy().astype(np.float64)
    total, hits, count = 0.0, 0, 0
    for k in range(2):
        pk, tk = p[:, :, k].reshape(32, 6), t[:, :, k].reshape(32, 6)  # 32 candidates
        scores = pk @ tk.T
        total -= np.trace(np_log_softmax(scores))
        hits += int((scores.argmax(axis=1) == np.arange(32)).sum())
        count += 32
    np.testing.assert_allclose(float(loss), total / count, rtol=1e-5)
    np.testing.assert_allclose(float(accuracy), hits / count)
    assert task.chance_accuracy == pytest.approx(1 / 32)


def test_binary_loss_uses_the_other_column_of_the_same_scan():
    task = make_task(3, loss="binary")
    inputs, target = batch_of(task, 2)
    outputs = task(inputs, training=False)
    loss, accuracy = task.loss_and_accuracy(target, outputs)
    p = outputs["predictions"].numpy().astype(np.float64)
    t = outputs["targets"].numpy().astype(np.float64)
    neg = np.stack([t[b, target.numpy()[b]] for b in range(2)])
    s_pos = (p * t).mean(axis=(-2, -1)).ravel()
    s_neg = (p * neg).mean(axis=(-2, -1)).ravel()
    sig_pos, sig_neg = 1 / (1 + np.exp(-s_pos)), 1 / (1 + np.exp(-s_neg))
    expected = -(np.log(sig_pos).mean() + np.log(1 - sig_neg).mean()) / 2
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(
        float(accuracy), ((sig_pos > 0.5).mean() + (sig_neg < 0.5).mean()) / 2
    )
    assert task.chance_accuracy == 0.5


def test_binary_variant_passes_gradient_and_graph_checks():
    task = contract.build_task("cpc", 3, loss="binary", code_size=8, context_units=4)
    volume = contract.make_volume(3)
    batch = contract.make_batch(task.build_from_example(), volume)
    contract.check_all_weights_get_gradients(task, batch)
    step = tf.function(lambda x, y: task.compute_loss_and_metrics(x, y, training=True))
    loss, metrics = step(*batch)
    eager_loss, _ = task.compute_loss_and_metrics(*batch, training=False)
    assert np.isfinite(float(loss)) and np.isfinite(float(eager_loss))


def test_2d_forward_shapes():
    task = make_task(2, grid=4, overlap=False)  # 8 x 8 patches, 4 columns, rows 2 and 3 ahead
    inputs, target = batch_of(task, 3)
    assert inputs.shape == (3, 4, 4, 8, 8, 1) and target.shape == (3, 4)
    outputs = task(inputs, training=True)
    assert outputs["predictions"].shape == (3, 4, 2, 6)
    task.loss_and_accuracy(target, outputs)
    assert task.chance_accuracy == pytest.approx(1 / 12)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"loss": "nce"}, "loss"),
        ({"code_size": 0}, "code_size"),
        ({"grid": 2.5}, "grid"),
        ({"grid": 16}, "grid"),  # 2-voxel patches, smaller than the encoder's minimum 4
        ({"temperature": 0}, "temperature"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError) as info:
        make_task(3, **kwargs)
    assert info.value.key == key


def test_3d_overlapping_grid_predicts_past_the_skipped_row():
    task = make_task(3, grid=4, overlap=True)  # stride 32 // 5 = 6, patch 12
    assert task.patch_shape == (12, 12, 12) and task.predict_steps == 1  # rows 0-1 in, 3 out
    inputs, target = batch_of(task, 2, training=False)
    assert inputs.shape == (2, 4, 4, 4, 12, 12, 12, 1)
    assert task(inputs)["predictions"].shape == (2, 16, 1, 6)


def test_volume_of_another_shape_is_rejected():
    task = make_task(3)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        task.transform(np.zeros((24, 32, 32, 1), np.float32), tf.constant([0, 0]))
