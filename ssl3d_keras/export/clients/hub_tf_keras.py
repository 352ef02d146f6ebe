"""Client: tensorflow_hub.load and hub.KerasLayer fine-tuning inside a tf_keras model."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_hub as hub  # noqa: E402
import tf_keras  # noqa: E402
from _common import Checks, read_args  # noqa: E402


def hub_load(c, path, probe, tol):
    obj = hub.load(path)
    x = probe["inputs"]
    c.close("hub.load __call__(training=False) == encoder", obj(x, training=False),
            probe["features"], tol)
    skip_keys = [key for key in probe if key.startswith("skip:")]
    if skip_keys:
        skips = obj.skips(x, training=False)
        for key in skip_keys:
            c.close(f"hub.load skips['{key[5:]}'] == encoder", skips[key[5:]], probe[key], tol)
    # Last: training=True updates the BatchNorm moving statistics in place.
    c.true("hub.load __call__(training=True) runs",
           obj(x, training=True).shape == probe["features"].shape)
    c.true("variables/trainable_variables/regularization_losses present",
           len(obj.variables) >= len(obj.trainable_variables) > 0
           and isinstance(list(obj.regularization_losses), list),
           [len(obj.variables), len(obj.trainable_variables), len(obj.regularization_losses)])


def keras_layer(c, path, probe, tol):
    x = probe["inputs"]
    layer = hub.KerasLayer(path, trainable=True)
    inputs = tf_keras.Input(x.shape[1:])
    features = layer(inputs)
    axes = list(range(1, len(x.shape) - 1))
    pooled = tf_keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=axes))(features)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(2)(pooled))
    c.close("hub.KerasLayer (tf_keras) inference == encoder",
            tf_keras.Model(inputs, features)(x, training=False), probe["features"], tol)
    before = {v.name: v.numpy().copy() for v in layer.weights}
    trainable = {v.name for v in layer.trainable_weights}
    model.compile(tf_keras.optimizers.Adam(1e-2),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y = np.arange(len(x)) % 2
    model.fit(x, y, epochs=2, batch_size=len(x), verbose=0)
    after = {v.name: v.numpy() for v in layer.weights}
    changed = [n for n in trainable if not np.array_equal(before[n], after[n])]
    c.true("hub.KerasLayer fine-tune changes every trainable weight",
           len(changed) == len(trainable) > 0, [len(changed), len(trainable)])
    moving = [n for n in before if "moving_" in n]
    moved = [n for n in moving if not np.array_equal(before[n], after[n])]
    c.true("hub.KerasLayer fine-tune updates BatchNorm moving statistics",
           len(moved) == len(moving), [len(moved), len(moving)])
    c.true("hub.KerasLayer adds the regularisation losses",
           len(model.losses) == int(probe["n_regularizers"]),
           [len(model.losses), int(probe["n_regularizers"])])


def main():
    path, probe, tol = read_args()
    c = Checks("hub_tf_keras")
    c.run("hub.load", lambda c: hub_load(c, path, probe, tol))
    c.run("hub.KerasLayer", lambda c: keras_layer(c, path, probe, tol))
    c.emit()


if __name__ == "__main__":
    main()
