"""The losses against independent numpy computations and hand-computed cases."""

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras import losses
from ssl3d_keras.errors import ConfigError


def np_log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_info_nce(predictions, targets, temperature=1.0):
    """Loop over every prediction: -log softmax of its own target among all N."""
    p = predictions.reshape(-1, *predictions.shape[-2:]).astype(np.float64)
    t = targets.reshape(-1, *targets.shape[-2:]).astype(np.float64)
    total, hits, count = 0.0, 0, 0
    for group in range(p.shape[0]):
        for i in range(p.shape[1]):
            scores = np.array([p[group, i] @ t[group, j] for j in range(p.shape[1])]) / temperature
            total -= np_log_softmax(scores)[i]
            hits += int(np.argmax(scores) == i)
            count += 1
    return total / count, hits / count


@pytest.mark.parametrize("shape", [(6, 5), (3, 7, 4)])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_info_nce_matches_numpy(rng, shape, temperature):
    predictions = rng.normal(size=shape).astype(np.float32)
    targets = (predictions + rng.normal(scale=1.5, size=shape)).astype(np.float32)
    expected_loss, expected_acc = np_info_nce(predictions, targets, temperature)
    loss = losses.info_nce_loss(predictions, targets, temperature=temperature)
    assert loss.dtype == tf.float32 and loss.shape == ()
    np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-5)
    if temperature == 1.0:
        accuracy = losses.info_nce_accuracy(predictions, targets)
        np.testing.assert_allclose(float(accuracy), expected_acc)
        assert 0 < expected_acc < 1  # the case is not trivial


@pytest.mark.parametrize("offset", [0, 3, 5])
def test_info_nce_offset_scores_a_slice_against_all_candidates(rng, offset):
    # A replica's 3 predictions (rows offset..offset+2 of 8) against the 8 gathered targets.
    predictions = rng.normal(size=(2, 8, 4)).astype(np.float32)
    targets = (predictions + rng.normal(scale=1.5, size=(2, 8, 4))).astype(np.float32)
    local = predictions[:, offset:offset + 3]
    logits = np.einsum("kic,kjc->kij", local.astype(np.float64), targets)
    rows = offset + np.arange(3)
    expected = -np.mean([np_log_softmax(logits[k, i])[rows[i]] for k in range(2) for i in range(3)])
    hits = np.mean([np.argmax(logits[k, i]) == rows[i] for k in range(2) for i in range(3)])
    loss = losses.info_nce_loss(local, targets, offset=tf.constant(offset))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(losses.info_nce_accuracy(local, targets, offset=offset)), hits)


def test_info_nce_over_replica_slices_averages_to_the_global_loss(rng):
    predictions = rng.normal(size=(3, 8, 4)).astype(np.float32)
    targets = rng.normal(size=(3, 8, 4)).astype(np.float32)
    parts = [losses.info_nce_loss(predictions[:, r:r + 4], targets, offset=r) for r in (0, 4)]
    np.testing.assert_allclose(float(np.mean(parts)),
                               float(losses.info_nce_loss(predictions, targets)), rtol=1e-6)


def test_info_nce_is_log_n_for_uninformative_codes():
    z = np.zeros((3, 8, 4), np.float32)
    np.testing.assert_allclose(float(losses.info_nce_loss(z, z)), np.log(8), rtol=1e-6)


def test_info_nce_float32_under_bfloat16_inputs(rng):
    p = tf.cast(rng.normal(size=(4, 3)), tf.bfloat16)
    loss = losses.info_nce_loss(p, p)
    assert loss.dtype == tf.float32


def test_binary_cpc_matches_numpy(rng):
    shape = (5, 3, 2, 6)  # (batch, positions, steps, code)
    predictions, positives, negatives = (
        rng.normal(size=shape).astype(np.float32) for _ in range(3)
    )
    s_pos = (predictions * positives).mean(axis=(-2, -1)).astype(np.float64)
    s_neg = (predictions * negatives).mean(axis=(-2, -1)).astype(np.float64)
    # Binary cross-entropy of sigmoid scores, labels 1 (positives) and 0 (negatives).
    sigmoid = 1 / (1 + np.exp(-np.concatenate([s_pos, s_neg]).ravel()))
    labels = np.concatenate([np.ones(s_pos.size), np.zeros(s_neg.size)])
    expected = -np.mean(labels * np.log(sigmoid) + (1 - labels) * np.log(1 - sigmoid))
    expected_acc = np.mean((sigmoid > 0.5) == (labels == 1))
    loss = losses.binary_cpc_loss(predictions, positives, negatives)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(
        float(losses.binary_cpc_accuracy(predictions, positives, negatives)), expected_acc
    )
    assert 0 < expected_acc < 1


@pytest.mark.parametrize("distance", ["squared_euclidean", "mean_squared"])
@pytest.mark.parametrize("margin", [1.0, 0.25])
def test_triplet_loss_matches_numpy(rng, distance, margin):
    a, p, n = (rng.normal(scale=0.5, size=(16, 5)).astype(np.float32) for _ in range(3))
    reduce = np.sum if distance == "squared_euclidean" else np.mean
    d_ap = reduce((a.astype(np.float64) - p) ** 2, axis=-1)
    d_an = reduce((a.astype(np.float64) - n) ** 2, axis=-1)
    expected = np.mean(np.maximum(0.0, d_ap - d_an + margin))
    loss = losses.triplet_loss(a, p, n, margin, distance=distance)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    accuracy = losses.triplet_accuracy(a, p, n, distance=distance)
    np.testing.assert_allclose(float(accuracy), np.mean(d_ap < d_an))


def test_triplet_hinge_switches_off_when_negative_is_far():
    # Unit embeddings: D(a, p) = |(1,0) - (0.6,0.8)|^2 = 0.16 + 0.64 = 0.8; D(a, n) = 4.
    a = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    p = np.array([[0.6, 0.8], [0.6, 0.8]], np.float32)
    n = np.array([[-1.0, 0.0], [0.6, -0.8]], np.float32)  # second: D(a, n) = 0.8
    # Triplet 1: 0.8 - 4 + 1 < 0 -> 0 (off). Triplet 2: 0.8 - 0.8 + 1 = 1.
    np.testing.assert_allclose(float(losses.triplet_loss(a, p, n, 1.0)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(losses.triplet_loss(a[:1], p[:1], n[:1], 1.0)), 0.0)
    np.testing.assert_allclose(float(losses.triplet_accuracy(a, p, n)), 0.5)


def test_old_mean_squared_distance_never_switches_hinge_off():
    # Sigmoid outputs lie in [0, 1]: the most separated triplet possible still costs.
    a = np.ones((1, 8), np.float32)
    n = np.zeros((1, 8), np.float32)
    loss = losses.triplet_loss(a, a, n, 1.0, distance="mean_squared")
    np.testing.assert_allclose(float(loss), 0.0, atol=1e-7)  # only exactly at the extreme
    n_almost = np.full((1, 8), 0.01, np.float32)
    assert float(losses.triplet_loss(a, a, n_almost, 1.0, distance="mean_squared")) > 0


def test_unknown_distance_is_a_config_error():
    z = np.zeros((2, 3), np.float32)
    with pytest.raises(ConfigError, match="distance.*Received: 'cosine'"):
        losses.triplet_loss(z, z, z, distance="cosine")


def test_losses_are_graph_safe_with_dynamic_batch(rng):
    @tf.function(input_signature=[tf.TensorSpec((None, None, 4), tf.float32)] * 2)
    def f(p, t):
        return losses.info_nce_loss(p, t), losses.info_nce_accuracy(p, t)

    p = rng.normal(size=(2, 5, 4)).astype(np.float32)
    t = rng.normal(size=(2, 5, 4)).astype(np.float32)
    loss, acc = f(p, t)
    np.testing.assert_allclose(float(loss), np_info_nce(p, t)[0], rtol=1e-5)
    np.testing.assert_allclose(float(acc), np_info_nce(p, t)[1])
