"""Contrastive predictive coding: grid geometry, patches, gathering and losses."""

import itertools

import keras
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
    # The old code (preprocess_cpc.py): `np.flip(patch, 0)` with probability 1/2, then a
    # random 7/8 crop padded back. Only the first axis flips.
    task = make_task(3)
    volume = random_volume(3)
    clean, _ = task.transform(volume, tf.constant([4, 4]), training=False)
    augmented, _ = task.transform(volume, tf.constant([4, 4]), training=True)
    crop = 7  # 7/8 of an 8-voxel patch, padded back with (0, 1) zeros per axis
    flips_seen = []
    for i, j, k in itertools.product(range(4), repeat=3):
        patch, original = augmented[i, j, k].numpy(), clean[i, j, k].numpy()
        assert not patch[crop:].any() and not patch[:, crop:].any() and not patch[:, :, crop:].any()
        matches = []
        for flips in itertools.product((False, True), repeat=3):
            axes = [a for a in range(3) if flips[a]]
            flipped = np.flip(original, axes) if axes else original
            for start in itertools.product((0, 1), repeat=3):
                window = flipped[tuple(slice(s, s + crop) for s in start)]
                if np.array_equal(window, patch[:crop, :crop, :crop]):
                    matches.append(flips)
        assert len(matches) == 1, f"patch {(i, j, k)}: {matches}"
        assert matches[0][1:] == (False, False), "only the first axis may flip"
        flips_seen.append(matches[0][0])
    assert 16 <= sum(flips_seen) <= 48  # 64 patches, each flipped with probability 1/2


def test_2d_training_patches_are_never_flipped():
    task = make_task(2)  # overlapping 10 x 10 patches; crop int(10 * 11 / 12) = 9
    volume = random_volume(2)
    clean, _ = task.transform(volume, tf.constant([4, 4]), training=False)
    augmented, _ = task.transform(volume, tf.constant([4, 4]), training=True)
    for i, j in itertools.product(range(5), repeat=2):
        patch, original = augmented[i, j].numpy()[:9, :9], clean[i, j].numpy()
        windows = [original[a : a + 9, b : b + 9] for a in (0, 1) for b in (0, 1)]
        assert any(np.array_equal(patch, w) for w in windows), (i, j)


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
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)  # cosine scores: unit codes
    np.testing.assert_allclose(outputs["targets"].numpy(), expected, rtol=1e-5, atol=1e-6)
    raw = make_task(3, similarity="dot")
    raw(inputs, training=False)
    raw.set_weights(task.get_weights())
    np.testing.assert_allclose(raw(inputs, training=False)["targets"].numpy(),
                               codes[:, target_cells], rtol=1e-5, atol=1e-6)


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
        np.testing.assert_allclose(np.linalg.norm(pk, axis=1), 1, rtol=1e-5)
        scores = pk @ tk.T / 0.1  # cosine similarity over the default temperature
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
        ({"similarity": "cos"}, "similarity"),
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


# --- InfoNCE at initialisation ---------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_fresh_info_nce_loss_is_near_log_candidates(scale):
    # Volumes of standard deviation 10 (unnormalised intensities) through an encoder without
    # normalisation layers: raw dot products of the codes are large, cosine scores are not.
    keras.utils.set_random_seed(0)
    encoder = {**TINY, "norm": "none"}
    volumes = (np.random.default_rng(0).normal(size=(8, 32, 32, 32, 1)) * scale).astype("float32")

    def initial_loss(**kwargs):
        keras.utils.set_random_seed(0)
        task = tasks.get("cpc", input_shape=(32, 32, 32, 1), encoder=dict(encoder),
                         code_size=64, context_units=32, **kwargs)
        pairs = [task.transform(v, tf.constant([i, 7]), training=False) for i, v in enumerate(volumes)]
        inputs, target = tf.stack([p[0] for p in pairs]), tf.stack([p[1] for p in pairs])
        loss, _ = task.loss_and_accuracy(target, task(inputs, training=True))
        return float(loss), task.chance_accuracy

    loss, chance = initial_loss()
    log_n = np.log(1 / chance)  # 8 volumes x 16 columns = 128 candidates
    assert chance == pytest.approx(1 / 128)
    assert abs(loss - log_n) < 0.15 * log_n, (loss, log_n)
    if scale == 10.0:  # what the cosine scores fix
        dot_loss, _ = initial_loss(similarity="dot", temperature=1.0)
        assert dot_loss > 1.5 * log_n, (dot_loss, log_n)


def test_similarity_round_trip_and_old_configs_score_dot_products():
    task = make_task(3)
    assert (task.similarity, task.temperature) == ("cosine", 0.1)
    config = task.get_config()
    assert type(task).from_config(config).similarity == "cosine"
    # Saved before `similarity` existed: plain dot products (they also stored temperature 1).
    legacy = {k: v for k, v in config.items() if k != "similarity"}
    old = type(task).from_config({**legacy, "temperature": 1.0})
    assert (old.similarity, old.temperature) == ("dot", 1.0)


def test_binary_loss_keeps_raw_codes():
    task = make_task(3, loss="binary")
    inputs, _ = batch_of(task, 1, training=False)
    norms = np.linalg.norm(task(inputs)["targets"].numpy(), axis=-1)
    assert not np.allclose(norms, 1.0)
