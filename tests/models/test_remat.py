"""recompute: the recomputed backward pass is the plain one (BatchNorm, Dropout)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.models.remat import recompute


def _layers():
    keras.utils.set_random_seed(7)  # the same weights and dropout seeds on every build
    return [keras.layers.Conv3D(4, 3, padding="same"), keras.layers.ReLU(),
            keras.layers.BatchNormalization(), keras.layers.Dropout(0.3),
            keras.layers.Conv3D(3, 3, padding="same"), keras.layers.BatchNormalization()]


def _step(how, graph):
    layers = _layers()
    x = tf.random.stateless_normal((2, 6, 6, 6, 2), seed=[1, 2])

    def segment(t):
        for layer in layers:
            t = layer(t, training=True)
        return t

    segment(x)  # build
    variables = [w for layer in layers for w in layer.trainable_weights]
    call = {"plain": segment, "recompute": lambda t: recompute(segment, t, layers),
            "naive": tf.recompute_grad(segment)}[how]

    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = call(x)
            # a loss that is not invariant to the last BatchNorm's shift and scale
            loss = tf.reduce_sum(y * tf.sin(tf.range(3, dtype=tf.float32)))
        return loss, tape.gradient(loss, [*variables, x])

    loss, grads = (tf.function(step) if graph else step)()
    state = [w.numpy() for layer in layers for w in layer.non_trainable_weights]
    seeds = layers[3].seed_generator.state.numpy()
    return float(loss), [g.numpy() for g in grads], state, seeds


@pytest.mark.parametrize("graph", [False, True])
def test_recomputed_gradients_and_statistics_equal_the_plain_ones(graph):
    loss, grads, state, seeds = _step("plain", graph)
    r_loss, r_grads, r_state, r_seeds = _step("recompute", graph)
    assert r_loss == pytest.approx(loss, rel=1e-6)
    for a, b in zip(grads, r_grads, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # the moving statistics moved once, and the dropout seed advanced once
    for a, b in zip(state, r_state, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(r_seeds, seeds)


def test_plain_recompute_grad_would_be_wrong():
    # The traps recompute() handles, shown on tf.recompute_grad alone: a second
    # dropout mask (other gradients) and a second BatchNorm update.
    _, grads, state, seeds = _step("plain", graph=True)
    _, n_grads, n_state, n_seeds = _step("naive", graph=True)
    assert any(not np.allclose(a, b, rtol=1e-3) for a, b in zip(grads, n_grads, strict=True))
    assert any(not np.allclose(a, b, rtol=1e-5) for a, b in zip(state, n_state, strict=True))
    assert not np.array_equal(n_seeds, seeds)
