"""`build_encoder`: the `encoder` table picks the network; bad tables are clear ConfigErrors."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras import tasks
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models import DenseNetEncoder, UNetEncoder, build_encoder, list_architectures
from ssl3d_keras.models.factory import architecture_arguments

TINY_UNET = {"depth": 1, "base_filters": 2, "norm": "none", "dropout": 0.0}


def test_a_table_without_architecture_is_the_unet():
    encoder = build_encoder(dict(TINY_UNET), input_channels=2, dim=3)
    assert isinstance(encoder, UNetEncoder)
    assert (encoder.depth, encoder.base_filters, encoder.input_channels, encoder.dim) == (1, 2, 2, 3)
    same = build_encoder({"architecture": "unet", **TINY_UNET}, input_channels=2, dim=2)
    assert isinstance(same, UNetEncoder) and same.dim == 2
    assert list_architectures() == ["densenet121", "unet"]
    assert "weights" in architecture_arguments("densenet121")
    assert "depth" in architecture_arguments("unet")
    assert "input_channels" not in architecture_arguments("unet")


@pytest.mark.parametrize(
    ("spec", "dim", "key", "message"),
    [
        ({"architecture": "densenet12"}, 2, "encoder.architecture", "did you mean 'densenet121'"),
        ({"dept": 2}, 3, "encoder.dept", "did you mean 'depth'"),
        ({"architecture": "densenet121", "depth": 2}, 2, "encoder.depth",
         "encoder=\\{architecture=\"densenet121\"\\}"),
        ({"architecture": "densenet121"}, 3, "encoder.architecture", "2D encoder and the data is 3D"),
        ({"input_channels": 3}, 3, "encoder.input_channels", "set by the data"),
        ({"architecture": "densenet121", "weights": "imagenet"}, 2, "weights",
         "3 input channels only"),
        ({"architecture": "densenet121", "weights": "/no/such.weights.h5"}, 2, "weights",
         "existing weights file"),
        ({"architecture": "densenet121", "input_size": 16}, 2, "input_size", "smaller than 32"),
    ],
)
def test_bad_tables_name_the_key(spec, dim, key, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_encoder(spec, input_channels=1, dim=dim)
    assert info.value.key == key


def test_a_table_must_be_a_dict():
    with pytest.raises(ConfigError, match="expected a table"):
        build_encoder(["depth", 2], input_channels=1, dim=3)


def test_densenet_round_trip_keeps_attributes_and_outputs(rng):
    encoder = build_encoder({"architecture": "densenet121"}, input_channels=2, dim=2)
    assert isinstance(encoder, DenseNetEncoder)
    x = rng.normal(size=(2, 64, 64, 2)).astype(np.float32)
    expected = encoder(x, training=False)
    assert tuple(expected.shape) == (2, 2, 2, 1024)
    # Through JSON, as config.json and a task's config store it.
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(encoder)))
    assert config["config"]["input_channels"] == 2 and config["config"]["weights"] is None
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is DenseNetEncoder
    assert (clone.dim, clone.input_channels, clone.min_input_size, clone.divisible_by) == (
        2, 2, 32, 32)
    assert sorted(clone.pyramid_outputs) == ["bottleneck", "skip_1", "skip_2", "skip_3", "skip_4"]
    assert clone.get_config() == encoder.get_config()
    clone.set_weights(encoder.get_weights())
    np.testing.assert_allclose(clone(x, training=False), expected, atol=1e-5)


def test_rotation_task_with_densenet_trains_and_round_trips(rng):
    task = tasks.get("rotation", input_shape=(32, 32, 3), encoder={"architecture": "densenet121"},
                     head_units=(8,), head_dropout=0.0)
    assert isinstance(task.encoder, DenseNetEncoder)
    task.build_from_example()
    # Eager: tracing the gradient of 121 layers costs a minute; one eager step takes seconds.
    task.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    images = rng.uniform(size=(2, 32, 32, 3)).astype(np.float32)
    pairs = [task.transform(tf.constant(im), tf.constant([i, 7]), training=True)
             for i, im in enumerate(images)]
    inputs = tf.stack([p[0] for p in pairs])
    target = tf.stack([p[1] for p in pairs])
    before = [w.numpy() for w in task.encoder.trainable_weights[:3]]
    history = task.fit(tf.data.Dataset.from_tensors((inputs, target)), epochs=1, verbose=0,
                       shuffle=False)
    loss, accuracy = history.history["loss"][0], history.history["accuracy"][0]
    assert np.isfinite(loss) and 0.0 <= accuracy <= 1.0
    assert any(not np.allclose(b, w.numpy()) for b, w in
               zip(before, task.encoder.trainable_weights[:3], strict=True))
    # The task's config stores the encoder; from_config rebuilds a DenseNet task.
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(task)))
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone.encoder, DenseNetEncoder) and clone.encoder.input_channels == 3
    clone.build_from_example()
    clone.set_weights(task.get_weights())
    np.testing.assert_allclose(clone(inputs, training=False), task(inputs, training=False),
                               atol=1e-5)
