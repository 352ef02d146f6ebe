"""BigFullyHead and ProjectionHead: structure, shapes, dtype, serialisation."""

import keras
import numpy as np
import pytest

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models import BigFullyHead, ProjectionHead


def test_big_fully_paper_structure():
    head = BigFullyHead(10)
    head.build((None, 2, 2, 2, 256))
    dense = [w.shape for w in head.weights if w.path.endswith("kernel")]
    assert dense == [(2048, 2048), (2048, 1024), (1024, 10)]
    norms = [w for w in head.weights if "norm" in w.path]
    assert len(norms) == 8  # gamma, beta, moving mean, moving variance per hidden layer
    assert head.count_params() == (2048 * 2048 + 2048) + (2048 * 1024 + 1024) + (
        1024 * 10 + 10
    ) + 4 * (2048 + 1024)


def test_big_fully_matches_numpy_in_inference(rng):
    head = BigFullyHead(3, units=(5,), dropout=0.5)
    x = rng.normal(size=(4, 2, 3)).astype("float32")
    out = np.asarray(head(x, training=False))
    w1, b1, gamma, beta, mean, var, w2, b2 = (w.numpy() for w in head.weights)
    h = np.maximum(x.reshape(4, 6) @ w1 + b1, 0)
    h = (h - mean) / np.sqrt(var + 1e-3) * gamma + beta
    np.testing.assert_allclose(out, h @ w2 + b2, rtol=1e-5, atol=1e-6)
    assert out.shape == (4, 3)
    # Dropout is active in training only.
    assert not np.allclose(head(x, training=True), out)


def test_projection_head_normalizes(rng):
    # Seeded and wide enough that no row has all its ReLUs dead (a zero vector has no direction).
    keras.utils.set_random_seed(7)
    head = ProjectionHead(embedding_dim=6, units=(32, 32))
    out = np.asarray(head(rng.normal(size=(5, 3, 4)).astype("float32")))
    assert out.shape == (5, 6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
    raw = ProjectionHead(embedding_dim=6, units=(), normalize=False)
    x = rng.normal(size=(5, 4)).astype("float32")
    out = raw(x)
    w, b = (v.numpy() for v in raw.weights)
    np.testing.assert_allclose(out, x @ w + b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "head",
    [BigFullyHead(4, units=(6, 5), dropout=0.2), ProjectionHead(3, units=(4,), batch_norm=False)],
)
def test_serialisation_round_trip(head, rng):
    x = rng.normal(size=(2, 7)).astype("float32")
    expected = np.asarray(head(x))
    config = head.get_config()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert type(clone) is type(head) and clone.get_config() == config
    assert clone.built  # keras rebuilt it from the saved build config
    clone.set_weights(head.get_weights())
    np.testing.assert_allclose(clone(x), expected, rtol=1e-6)


def test_float32_output_under_mixed_precision(rng):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        for head in (BigFullyHead(3, units=(4,)), ProjectionHead(3, units=(4,))):
            x = keras.ops.cast(rng.normal(size=(2, 5)), "bfloat16")
            assert keras.backend.standardize_dtype(head(x).dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="units"):
        BigFullyHead(3, units=(0,))
    with pytest.raises(ConfigError, match="dropout"):
        BigFullyHead(3, dropout=1.5)
    with pytest.raises(ConfigError, match="num_outputs"):
        BigFullyHead(0)


def test_tf_checkpoint_holds_every_head_variable(tmp_path):
    import tensorflow as tf

    head = BigFullyHead(3, units=(8, 4), dropout=0.5)
    head(np.ones((2, 5), "float32"), training=False)
    path = tf.train.Checkpoint(model=head).write(str(tmp_path / "ckpt"))
    stored = {name for name, _ in tf.train.list_variables(path)}
    # Every weight (kernels, biases, BatchNorm statistics) has its own checkpoint entry.
    assert len([n for n in stored if n.startswith("model/")]) == len(head.weights) == 14
    restored = BigFullyHead(3, units=(8, 4), dropout=0.5)
    restored(np.zeros((2, 5), "float32"), training=False)
    tf.train.Checkpoint(model=restored).read(path).assert_consumed()
    for a, b in zip(head.weights, restored.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("make", [lambda: BigFullyHead(5, units=(64, 32)),
                                  lambda: ProjectionHead(8, units=(64,))],
                         ids=["big_fully", "projection"])
def test_relu_layers_are_he_normal_and_the_linear_output_glorot(make):
    head = make()
    head.build((None, 40))
    hidden = [layer for layer in head._hidden.layers if isinstance(layer, keras.layers.Dense)]
    assert len(hidden) == len(head.units)
    for layer in hidden:
        assert isinstance(layer.kernel_initializer, keras.initializers.HeNormal), layer.name
    # The logits / embedding layer has no ReLU after it: Glorot, Keras' default.
    assert isinstance(head._output.kernel_initializer, keras.initializers.GlorotUniform)
    first = keras.ops.convert_to_numpy(hidden[0].kernel)
    np.testing.assert_allclose(first.var(), 2.0 / 40, rtol=0.15)
