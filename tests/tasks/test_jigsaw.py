"""Jigsaw puzzles: patches are the right cells in the labelled order; the permutation set."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras import tasks
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models import UNetEncoder
from ssl3d_keras.ops.permutations import maximal_hamming_permutations, min_pairwise_hamming
from ssl3d_keras.tasks.patches import encode_patches

TINY = {"depth": 1, "base_filters": 4, "dropout": 0.0, "norm": "batch"}


def cell_crop(volume, cell_index, grid, jitter, offset):
    """Numpy reference: the patch of raster cell `cell_index` at `offset` inside the cell."""
    spatial = volume.shape[:-1]
    cells = [s // grid for s in spatial]
    coords = np.unravel_index(cell_index, (grid,) * len(spatial))
    return volume[tuple(
        slice(c * size + o, c * size + o + size - jitter)
        for c, size, o in zip(coords, cells, offset, strict=True)
    )]


def examples(task, volume, n, training):
    v = tf.constant(volume)
    data = tf.data.Dataset.range(n).map(
        lambda i: task.transform(v, tf.stack([tf.cast(i, tf.int32), 9]), training=training)
    )
    inputs, labels = next(iter(data.batch(n)))
    return inputs.numpy(), labels.numpy()


@pytest.mark.parametrize("shape", [(27, 30, 33, 2), (30, 36, 1)], ids=["3d", "2d"])
def test_evaluation_patches_are_centre_cuts_in_label_order(shape, rng):
    volume = rng.normal(size=shape).astype(np.float32)
    task = tasks.get("jigsaw", input_shape=shape, encoder=TINY, num_permutations=10)
    dim = len(shape) - 1
    centre = (task.jitter // 2,) * dim
    inputs, labels = examples(task, volume, 40, training=False)
    assert inputs.shape[1] == 3**dim
    assert sorted(set(labels.tolist())) == list(range(10))
    for x, label in zip(inputs, labels, strict=True):
        order = task.permutations[label]
        for i in range(3**dim):
            np.testing.assert_array_equal(x[i], cell_crop(volume, order[i], 3, 3, centre))


def test_training_patches_are_jittered_inside_their_cells(rng):
    shape = (24, 24, 24, 1)
    volume = rng.normal(size=shape).astype(np.float32)
    task = tasks.get("jigsaw", input_shape=shape, encoder=TINY, num_permutations=10)
    inputs, labels = examples(task, volume, 6, training=True)
    offsets = set()
    for x, label in zip(inputs, labels, strict=True):
        for i, cell in enumerate(task.permutations[label]):
            found = [o for o in itertools.product(range(4), repeat=3)
                     if np.array_equal(x[i], cell_crop(volume, cell, 3, 3, o))]
            assert len(found) == 1, f"patch {i} is not a crop of cell {cell}"
            offsets.add(found[0])
    # 162 patches with independent offsets in [0, 3]^3: far more than one offset occurs.
    assert len(offsets) > 20


def test_default_permutation_set():
    task = tasks.get("jigsaw", input_shape=(24, 24, 24, 1), encoder=TINY)
    perms = task.permutations
    assert perms.dtype == np.int32 and perms.shape == (100, 27)
    assert (np.sort(perms, axis=1) == np.arange(27)).all()
    assert len(np.unique(perms, axis=0)) == 100
    hamming = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    np.fill_diagonal(hamming, 27)
    # 27 = 3**3 patches: the affine maps of GF(27), at the optimal distance 26 of 27.
    assert hamming.min() == 26
    assert task.permutation_set == "affine"
    np.testing.assert_array_equal(perms[0], np.arange(27))  # the unshuffled puzzle is class 0
    assert task.get_config()["permutations"] == perms.tolist()
    assert task.get_config()["permutation_set"] == "affine"


def test_greedy_set_stays_available_and_auto_falls_back_to_it():
    greedy = tasks.get("jigsaw", input_shape=(24, 24, 24, 1), encoder=TINY,
                       num_permutations=8, permutation_set="greedy")
    np.testing.assert_array_equal(greedy.permutations,
                                  maximal_hamming_permutations(27, 8, seed=0))
    # 9 patches in 2D: GF(9) has 72 affine maps, so P = 100 needs the greedy search.
    auto = tasks.get("jigsaw", input_shape=(24, 24, 1), encoder=TINY, num_permutations=100)
    assert auto.permutation_set == "greedy"
    assert auto.get_config()["permutation_set"] == "greedy"
    small = tasks.get("jigsaw", input_shape=(24, 24, 1), encoder=TINY, num_permutations=72)
    assert small.permutation_set == "affine"
    assert min_pairwise_hamming(small.permutations) == 8


def test_config_round_trip_keeps_the_set_and_old_configs_load_as_greedy():
    task = tasks.get("jigsaw", input_shape=(24, 24, 24, 1), encoder=TINY, num_permutations=8)
    config = task.get_config()
    again = type(task).from_config(config)
    assert again.permutation_set == "affine"
    np.testing.assert_array_equal(again.permutations, task.permutations)
    # A config saved before `permutation_set` existed: its set was the greedy one.
    legacy = {k: v for k, v in config.items() if k not in ("permutation_set", "permutations")}
    old = type(task).from_config(legacy)
    assert old.permutation_set == "greedy"
    np.testing.assert_array_equal(old.permutations, maximal_hamming_permutations(27, 8, seed=0))
    # ... and one that stored its permutations keeps them exactly.
    stored = {**legacy, "permutations": old.permutations.tolist()}
    np.testing.assert_array_equal(type(task).from_config(stored).permutations, old.permutations)


def test_permutation_set_follows_its_seed():
    def perms(seed):
        return tasks.get("jigsaw", input_shape=(24, 24, 24, 1), encoder=TINY,
                         num_permutations=8, permutation_seed=seed).permutations

    np.testing.assert_array_equal(perms(0), perms(0))
    assert not np.array_equal(perms(0), perms(1))


def test_given_permutations_are_used(rng):
    shape = (24, 24, 1)
    perms = np.array([np.roll(np.arange(9), k) for k in range(9)], np.int32)
    task = tasks.get("jigsaw", input_shape=shape, encoder=TINY, num_permutations=9,
                     permutations=perms.tolist())
    np.testing.assert_array_equal(task.permutations, perms)
    volume = rng.normal(size=shape).astype(np.float32)
    inputs, labels = examples(task, volume, 5, training=False)
    for x, label in zip(inputs, labels, strict=True):
        for i in range(9):
            np.testing.assert_array_equal(x[i], cell_crop(volume, perms[label][i], 3, 3, (1, 1)))


def test_encoder_is_shared_and_features_concatenate_in_patch_order(rng):
    encoder = UNetEncoder(input_channels=1, dim=2, **TINY)
    patches = rng.normal(size=(2, 3, 8, 8, 1)).astype(np.float32)
    features = encode_patches(encoder, tf.constant(patches), training=False).numpy()
    single = [encoder(patches[:, i], training=False).numpy().reshape(2, -1) for i in range(3)]
    np.testing.assert_allclose(features, np.concatenate(single, axis=1), rtol=1e-5, atol=1e-6)


def test_network_outputs_one_logit_per_permutation(rng):
    task = tasks.get("jigsaw", input_shape=(24, 24, 1), encoder=TINY, num_permutations=12,
                     head_units=(8,))
    inputs, _ = examples(task, rng.normal(size=(24, 24, 1)).astype(np.float32), 2, True)
    logits = task(inputs)
    assert logits.shape == (2, 12) and logits.dtype == tf.float32
    assert task.chance_accuracy == pytest.approx(1 / 12)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"num_permutations": 3, "permutations": [[0, 1, 2, 3]] * 3}, "permutations"),
        ({"num_permutations": 2, "permutations": [list(range(9)), list(range(9))]},
         "permutations"),
        ({"num_permutations": 1}, "num_permutations"),
        ({"grid": 2, "num_permutations": 25}, "num_permutations"),
        ({"grid": 9}, "input_shape"),
        ({"permutation_set": "afine"}, "permutation_set"),
        ({"permutation_set": "affine", "num_permutations": 73}, "num_permutations"),
        # 6 x 6 = 36 patches: no prime power, no finite field of that size.
        ({"permutation_set": "affine", "grid": 6, "jitter": 0}, "permutation_set"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        tasks.get("jigsaw", input_shape=(24, 24, 1), encoder=TINY, **kwargs)


def test_patches_smaller_than_the_encoder_are_a_config_error():
    # The paper encoder needs 32 voxels; 64^3 in a 3-grid with jitter 3 gives 18.
    with pytest.raises(ConfigError, match="'input_shape'.*minimum input size 32"):
        tasks.get("jigsaw", input_shape=(64, 64, 64, 1))
