"""Exemplar networks: triplet views, shared head, negatives and the triplet loss."""

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras import tasks
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.ops.augment import exemplar_augment
from ssl3d_keras.testing import tasks as contract

TINY = {"depth": 1, "base_filters": 4, "dropout": 0.0, "norm": "none"}


def make_task(dim=3, **kwargs):
    shape = (16,) * dim + (1,)
    return tasks.get(
        "exemplar", input_shape=shape, encoder=dict(TINY), **{"embedding_size": 8, **kwargs}
    )


def random_volume(dim, seed=0):
    return np.random.default_rng(seed).normal(size=(16,) * dim + (1,)).astype(np.float32)


def batch_of(task, n):
    pairs = [task.transform(random_volume(task.dim, i), tf.constant([i, 9])) for i in range(n)]
    return tf.stack([p[0] for p in pairs]), tf.stack([p[1] for p in pairs])


def np_squared(a, b):
    return ((a.astype(np.float64) - b) ** 2).sum(axis=-1)


@pytest.mark.parametrize("dim", [3, 2])
def test_transform_is_augmented_view_then_original(dim):
    task = make_task(dim)
    volume = random_volume(dim)
    seed = tf.constant([5, 6])
    inputs, target = task.transform(volume, seed)
    assert inputs.shape == (2, *volume.shape) and inputs.dtype == tf.float32
    np.testing.assert_array_equal(inputs[1].numpy(), volume)
    np.testing.assert_array_equal(
        inputs[0].numpy(), exemplar_augment(tf.constant(volume), seed).numpy()
    )
    assert not np.array_equal(inputs[0].numpy(), volume)
    assert target.dtype == tf.int32 and target.shape == ()


def test_shared_head_embeds_unit_vectors_and_rolls_negatives():
    task = make_task()
    inputs, target = batch_of(task, 3)
    out = task(inputs, training=False)
    assert out.shape == (3, 3, 8) and out.dtype == tf.float32
    np.testing.assert_allclose(np.linalg.norm(out.numpy(), axis=-1), 1.0, rtol=1e-5)
    # negative of scan i = original of scan i - 1 (mod batch)
    np.testing.assert_array_equal(out[:, 2].numpy(), np.roll(out[:, 1].numpy(), 1, axis=0))
    # The positive is the shared head on the original alone.
    alone = task(inputs[1:2], training=False)
    np.testing.assert_allclose(alone[0, 1].numpy(), out[1, 1].numpy(), rtol=1e-5, atol=1e-6)


def test_loss_and_accuracy_match_numpy_triplets():
    task = make_task(margin=0.5)
    inputs, target = batch_of(task, 4)
    out = task(inputs, training=False).numpy()
    loss, accuracy = task.loss_and_accuracy(target, tf.constant(out))
    d_ap, d_an = np_squared(out[:, 0], out[:, 1]), np_squared(out[:, 0], out[:, 2])
    np.testing.assert_allclose(float(loss), np.maximum(0, d_ap - d_an + 0.5).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(accuracy), (d_ap < d_an).mean())
    assert task.chance_accuracy == 0.5


def test_hinge_switches_off_for_well_separated_unit_embeddings():
    task = make_task()
    # Hand-made unit embeddings: D(a, p) = 0.8, D(a, n) = 4 (off) and D(a, n) = 0.8 (on).
    a, p = [1.0, 0.0], [0.6, 0.8]
    triplets = tf.constant([[a, p, [-1.0, 0.0]], [a, p, [0.6, -0.8]]], tf.float32)
    loss, accuracy = task.loss_and_accuracy(tf.zeros([2], tf.int32), triplets)
    assert float(loss) == pytest.approx(0.5)  # (0 + 1) / 2
    loss_off, _ = task.loss_and_accuracy(tf.zeros([1], tf.int32), triplets[:1])
    assert float(loss_off) == 0.0
    # Accuracy counts D(a, p) < D(a, n) strictly: triplet 1 yes, triplet 2 a tie (no).
    assert float(accuracy) == 0.5


def test_semihard_negative_is_the_closest_other_original_beyond_the_positive():
    task = make_task(negatives="semihard")
    inputs, _ = batch_of(task, 6)
    out = task(inputs, training=False).numpy()
    anchors, originals = out[:, 0], out[:, 1]
    kinds = set()
    for i in range(6):
        d = np_squared(anchors[i][None], originals)
        d_ap = d[i]
        d[i] = np.nan  # not its own scan
        beyond = np.flatnonzero(d > d_ap)
        if beyond.size:
            expected, kinds = beyond[np.argmin(d[beyond])], kinds | {"semihard"}
        else:
            expected, kinds = np.nanargmax(d), kinds | {"farthest"}
        np.testing.assert_allclose(out[i, 2], originals[expected], rtol=1e-6)
    assert "semihard" in kinds


def test_semihard_falls_back_to_the_farthest_when_all_negatives_are_closer():
    task = make_task(negatives="semihard")
    anchor = tf.constant([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    # Positives far from their anchors: every other original is closer than the positive.
    positive = tf.constant([[-1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
    negative = task._pick_negatives(anchor, positive, positive).numpy()
    # Anchor 0 = (1, 0): others are (0, -1) and (0, 1), both at 2: argmax takes the first.
    np.testing.assert_array_equal(negative[0], [0.0, -1.0])
    # Anchor 1 = (0, 1): others (-1, 0) at 2 and (0, 1) at 0 -> farthest (-1, 0).
    np.testing.assert_array_equal(negative[1], [-1.0, 0.0])


def test_old_head_variant_has_three_sigmoid_heads_and_mean_squared_distance():
    task = make_task(head="old")
    inputs, target = batch_of(task, 3)
    out = task(inputs, training=False).numpy()
    assert ((out > 0) & (out < 1)).all()
    assert len(task.slot_heads) == 3
    loss, _ = task.loss_and_accuracy(target, tf.constant(out))
    d_ap = ((out[:, 0] - out[:, 1]) ** 2).mean(axis=-1)
    d_an = ((out[:, 0] - out[:, 2]) ** 2).mean(axis=-1)
    np.testing.assert_allclose(float(loss), np.maximum(0, d_ap - d_an + 1.0).mean(), rtol=1e-5)
    assert float(loss) > 0  # the old variant's hinge never switches off at margin 1


@pytest.mark.parametrize(
    "overrides",
    [{"head": "old"}, {"negatives": "semihard"}, {"pooling": "avg", "projection_units": (8,)}],
)
def test_variants_pass_the_gradient_contract(overrides):
    task = contract.build_task("exemplar", 2, embedding_size=8, **overrides).build_from_example()
    volume = contract.make_volume(2)
    contract.check_all_weights_get_gradients(task, contract.make_batch(task, volume, n=3))


def test_avg_pooling_runs_on_2d():
    task = make_task(2, pooling="avg")
    inputs, target = batch_of(task, 2)
    out = task(inputs, training=True)
    assert out.shape == (2, 3, 8)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"pooling": "max"}, "pooling"),
        ({"negatives": "random"}, "negatives"),
        ({"head": "three"}, "head"),
        ({"embedding_size": 0}, "embedding_size"),
        ({"margin": -1.0}, "margin"),
        ({"head": "old", "projection_units": (4,)}, "projection_units"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError) as info:
        make_task(**kwargs)
    assert info.value.key == key
