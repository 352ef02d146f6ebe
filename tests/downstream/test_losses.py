"""Downstream losses against numpy written out here, on hand cases and on gradients."""

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.downstream.losses import (
    dice_ce_loss,
    make_classification_loss,
    make_segmentation_loss,
    ordinal_loss,
    soft_dice_loss,
    sparse_categorical_loss,
)
from ssl3d_keras.errors import ConfigError


def _probabilities(rng, shape):
    logits = rng.normal(size=shape)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype("float32")


def _numpy_dice_loss(labels, probs, k, include_background=False, smooth=1e-5):
    batch = labels.shape[0]
    dice = np.zeros((batch, k))
    for b in range(batch):
        for c in range(k):
            g = (labels[b] == c).astype(np.float64)
            p = probs[b, ..., c].astype(np.float64)
            dice[b, c] = (2 * np.sum(p * g) + smooth) / (np.sum(p) + np.sum(g) + smooth)
    if not include_background:
        dice = dice[:, 1:]
    return 1.0 - dice.mean()


def _numpy_ce(labels, probs):
    picked = np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
    return -np.mean(np.log(np.clip(picked, 1e-7, 1.0)))


@pytest.mark.parametrize("spatial", [(6, 5, 4), (7, 9)])
@pytest.mark.parametrize("include_background", [False, True])
def test_soft_dice_matches_numpy(spatial, include_background, rng):
    labels = rng.integers(0, 3, size=(2, *spatial))
    probs = _probabilities(rng, (2, *spatial, 3))
    got = soft_dice_loss(labels, probs, num_classes=3, include_background=include_background)
    expected = _numpy_dice_loss(labels, probs, 3, include_background)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    # Labels with a trailing channel axis, as Keras pipelines often keep them.
    got = soft_dice_loss(labels[..., None], probs, num_classes=3,
                         include_background=include_background)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_soft_dice_perfect_and_disjoint():
    labels = np.array([[[0, 1, 2], [2, 1, 0]], [[1, 1, 2], [2, 2, 1]]])
    perfect = np.eye(3, dtype="float32")[labels]
    assert float(soft_dice_loss(labels, perfect, num_classes=3)) < 1e-6
    disjoint = np.eye(3, dtype="float32")[(labels + 1) % 3]
    assert float(soft_dice_loss(labels, disjoint, num_classes=3)) > 1 - 1e-5


def test_absent_class_uses_num_classes_and_stays_finite(rng):
    # Class 3 is in no sample and the batch maximum is 1: the one-hot depth must still be 4.
    labels = rng.integers(0, 2, size=(2, 4, 4, 4))
    probs = _probabilities(rng, (2, 4, 4, 4, 4))
    dice = float(soft_dice_loss(labels, probs, num_classes=4))
    assert np.isfinite(dice)
    np.testing.assert_allclose(dice, _numpy_dice_loss(labels, probs, 4), rtol=1e-5)
    both = float(dice_ce_loss(labels, probs, num_classes=4))
    assert np.isfinite(both)
    # A sample of background only with a confident prediction of it: finite, no NaN.
    zeros = np.zeros((1, 4, 4, 4), "int64")
    assert np.isfinite(float(dice_ce_loss(zeros, np.eye(4, dtype="float32")[zeros],
                                          num_classes=4)))


def test_dice_ce_matches_numpy_and_weights(rng):
    labels = rng.integers(0, 3, size=(2, 5, 5, 5))
    probs = _probabilities(rng, (2, 5, 5, 5, 3))
    probs[0, 0, 0, 0] = [0.0, 0.0, 1.0]  # a zero probability: the clip keeps the log finite
    labels[0, 0, 0, 0] = 0
    dice, ce = _numpy_dice_loss(labels, probs, 3), _numpy_ce(labels, probs)
    np.testing.assert_allclose(float(dice_ce_loss(labels, probs, num_classes=3)), dice + ce,
                               rtol=1e-5)
    np.testing.assert_allclose(
        float(dice_ce_loss(labels, probs, num_classes=3, ce_weight=0.5, dice_weight=2.0)),
        2.0 * dice + 0.5 * ce, rtol=1e-5)
    np.testing.assert_allclose(
        float(dice_ce_loss(labels, probs, num_classes=3, dice_weight=0.0)), ce, rtol=1e-5)


def test_losses_compute_in_float32_from_half_precision(rng):
    labels = rng.integers(0, 3, size=(2, 4, 4, 4))
    probs = _probabilities(rng, (2, 4, 4, 4, 3))
    half = tf.constant(probs, tf.float16)
    got = dice_ce_loss(labels, half, num_classes=3)
    assert got.dtype == tf.float32
    expected = _numpy_dice_loss(labels, probs, 3) + _numpy_ce(labels, probs)
    np.testing.assert_allclose(float(got), expected, rtol=2e-3)


@pytest.mark.parametrize("name", ["dice", "dice_ce"])
def test_segmentation_gradients_flow(name, rng):
    labels = rng.integers(0, 3, size=(2, 4, 4, 4))
    logits = tf.Variable(rng.normal(size=(2, 4, 4, 4, 3)).astype("float32"))
    loss_fn = make_segmentation_loss(name, 3)
    with tf.GradientTape() as tape:
        loss = loss_fn(labels, tf.nn.softmax(logits))
    grad = tape.gradient(loss, logits)
    assert grad is not None
    assert np.all(np.isfinite(grad.numpy()))
    assert np.max(np.abs(grad.numpy())) > 0


def test_make_segmentation_loss_by_name(rng):
    labels = rng.integers(0, 3, size=(2, 4, 4))
    probs = _probabilities(rng, (2, 4, 4, 3))
    dice = make_segmentation_loss("dice", 3)
    assert dice.__name__ == "dice"
    np.testing.assert_allclose(float(dice(labels, probs)), _numpy_dice_loss(labels, probs, 3),
                               rtol=1e-5)
    np.testing.assert_allclose(
        float(make_segmentation_loss("dice_ce", 3)(labels, probs)),
        _numpy_dice_loss(labels, probs, 3) + _numpy_ce(labels, probs), rtol=1e-5)
    with pytest.raises(ConfigError, match="did you mean 'dice_ce'"):
        make_segmentation_loss("dice-ce", 3)
    with pytest.raises(ConfigError, match="num_classes"):
        make_segmentation_loss("dice", 1)


def test_ordinal_loss_matches_numpy_bce(rng):
    grades = np.array([0, 1, 4, 2])
    targets = (grades[:, None] > np.arange(4)).astype("float32")
    probs = rng.uniform(0.01, 0.99, size=(4, 4)).astype("float32")
    expected = -np.mean(targets * np.log(probs) + (1 - targets) * np.log(1 - probs))
    np.testing.assert_allclose(float(ordinal_loss(targets, probs)), expected, rtol=1e-5)
    # Int grades are encoded inside, from the head's width.
    np.testing.assert_allclose(float(ordinal_loss(grades, probs)), expected, rtol=1e-5)
    np.testing.assert_allclose(float(ordinal_loss(grades[:, None], probs)), expected, rtol=1e-5)
    assert make_classification_loss("ordinal") is ordinal_loss


def test_softmax_classification_loss(rng):
    labels = np.array([0, 2, 1])
    probs = _probabilities(rng, (3, 3))
    loss = make_classification_loss("softmax")
    assert loss is sparse_categorical_loss
    np.testing.assert_allclose(float(loss(labels, probs)), _numpy_ce(labels, probs), rtol=1e-5)
    np.testing.assert_allclose(float(loss(labels[:, None], probs)), _numpy_ce(labels, probs),
                               rtol=1e-5)
    with pytest.raises(ConfigError, match="did you mean 'softmax'"):
        make_classification_loss("sofmax")
