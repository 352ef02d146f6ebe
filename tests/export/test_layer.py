"""SavedModelLayer fine-tunes a reusable SavedModel inside Keras 3 models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.errors import ExportError
from ssl3d_keras.export.layer import SavedModelLayer
from ssl3d_keras.export.savedmodel import save_savedmodel
from ssl3d_keras.models import UNetEncoder


@pytest.fixture(scope="module")
def regularized_export(tmp_path_factory):
    """A small functional encoder with BatchNorm, Dropout and an L2 kernel regulariser."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((None, None, None, 1))
    conv = keras.layers.Conv3D(3, 3, padding="same", name="conv",
                               kernel_regularizer=keras.regularizers.L2(0.05))
    x = keras.layers.BatchNormalization(name="bn")(keras.layers.ReLU()(conv(inputs)))
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.MaxPooling3D(2)(x)
    encoder = keras.Model(inputs, x)
    path = tmp_path_factory.mktemp("layer") / "savedmodel"
    save_savedmodel(encoder, path)
    return encoder, path, conv


def _classifier(layer, channels=1):
    inputs = keras.Input((None, None, None, channels))
    pooled = keras.layers.GlobalAveragePooling3D()(layer(inputs))
    return keras.Model(inputs, keras.layers.Dense(2)(pooled))


def test_weights_adopt_restored_variables_with_clean_names(regularized_export):
    _, path, _ = regularized_export
    layer = SavedModelLayer(str(path))
    names = [w.name for w in layer.weights]
    assert all(":" not in n and "/" not in n for n in names)
    assert {"conv_kernel", "conv_bias", "bn_gamma", "bn_beta", "bn_moving_mean"} <= set(names)
    assert len(layer.trainable_weights) == 4  # kernel, bias, gamma, beta
    # Assigning the Keras weight changes what the saved function computes: no copy.
    x = np.ones((1, 4, 4, 4, 1), np.float32)
    kernel = next(w for w in layer.weights if w.name == "conv_kernel")
    before = layer(x).numpy()
    kernel.assign(kernel.numpy() * 2.0)
    assert np.max(np.abs(layer(x).numpy() - before)) > 1e-3


def test_adam_finetune_updates_weights_and_batchnorm(regularized_export, rng):
    encoder, path, _ = regularized_export
    layer = SavedModelLayer(str(path))
    model = _classifier(layer)
    x = rng.normal(loc=2.0, size=(4, 8, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(layer(x, training=False), encoder(x, training=False), atol=1e-5)
    before = {w.name: w.numpy().copy() for w in layer.weights}
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.array([0, 1, 0, 1]), epochs=2, batch_size=4, verbose=0)
    for w in layer.weights:
        if w.trainable or "moving" in w.name:
            assert not np.array_equal(before[w.name], w.numpy()), w.name
    # Moving mean moves toward the batch mean (momentum 0.99 from 0): positive after 2 steps.
    assert np.all(next(w for w in layer.weights if w.name == "bn_moving_mean").numpy() > 0)


def test_regularization_loss_enters_gradient(regularized_export, rng):
    _, path, _ = regularized_export
    layer = SavedModelLayer(str(path))
    x = rng.normal(size=(2, 4, 4, 4, 1)).astype(np.float32)
    kernel = next(w for w in layer.weights if w.name == "conv_kernel")
    with tf.GradientTape() as tape:
        layer(x, training=True)
        penalty = tf.add_n(layer.losses)
    np.testing.assert_allclose(penalty, 0.05 * np.sum(np.square(kernel.numpy())), rtol=1e-5)
    grad = tape.gradient(penalty, kernel.value)
    np.testing.assert_allclose(grad, 2 * 0.05 * kernel.numpy(), rtol=1e-4, atol=1e-7)


def test_frozen_layer_runs_in_inference_mode(regularized_export, rng):
    encoder, path, _ = regularized_export
    layer = SavedModelLayer(str(path), trainable=False)
    moving = next(w for w in layer.weights if w.name == "bn_moving_mean")
    before = moving.numpy().copy()
    x = rng.normal(size=(2, 4, 4, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(layer(x, training=True), encoder(x, training=False), atol=1e-5)
    np.testing.assert_array_equal(moving.numpy(), before)
    assert layer.trainable_weights == [] and layer.losses == []


def test_skips_output_and_serialization(tmp_path, rng):
    encoder = UNetEncoder(input_channels=1, depth=2, base_filters=2)
    save_savedmodel(encoder, tmp_path / "sm")
    inputs = keras.Input((None, None, None, 1))
    skips = SavedModelLayer(str(tmp_path / "sm"), output="skips")(inputs)
    assert sorted(skips) == ["bottleneck", "features", "skip_1", "skip_2"]
    model = keras.Model(inputs, skips["skip_2"])
    x = rng.normal(size=(1, 16, 16, 16, 1)).astype(np.float32)
    expected = encoder.skips_model()(x, training=False)["skip_2"]
    np.testing.assert_allclose(model(x), expected, atol=1e-5)
    config = SavedModelLayer(str(tmp_path / "sm")).get_config()
    clone = SavedModelLayer.from_config(config)
    assert clone.handle == str(tmp_path / "sm") and clone.output_kind == "features"
    # Whole-model save/load of a Keras 3 model that contains the layer.
    saved = tmp_path / "m.keras"
    model.save(saved)
    reloaded = keras.saving.load_model(saved)
    np.testing.assert_allclose(reloaded(x), expected, atol=1e-5)


def test_bad_handles(tmp_path):
    with pytest.raises(ExportError, match="no saved_model.pb"):
        SavedModelLayer(str(tmp_path))
    encoder = keras.Model(*(lambda i: (i, keras.layers.Conv3D(1, 1)(i)))(keras.Input((4, 4, 4, 1))))
    save_savedmodel(encoder, tmp_path / "plain")
    with pytest.raises(ExportError, match="no 'skips' function"):
        SavedModelLayer(str(tmp_path / "plain"), output="skips")
    with pytest.raises(ExportError, match="output must be one of"):
        SavedModelLayer(str(tmp_path / "plain"), output="logits")
