"""Client: ssl3d_keras's SavedModelLayer fine-tuned with Adam inside a Keras 3 model."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402
from _common import Checks, read_args  # noqa: E402

from ssl3d_keras.export.layer import SavedModelLayer  # noqa: E402


def finetune(c, path, probe, tol):
    x = probe["inputs"]
    layer = SavedModelLayer(path)
    inputs = keras.Input(x.shape[1:])
    features = layer(inputs)
    pooled = keras.ops.mean(features, axis=tuple(range(1, len(x.shape) - 1)))
    model = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    c.close("SavedModelLayer inference == encoder", layer(x, training=False),
            probe["features"], tol)
    skip_keys = [key for key in probe if key.startswith("skip:")]
    if skip_keys:
        skips = SavedModelLayer(path, output="skips")(x)
        for key in skip_keys:
            c.close(f"SavedModelLayer skips['{key[5:]}'] == encoder", skips[key[5:]],
                    probe[key], tol)
    before = [w.numpy().copy() for w in layer.weights]
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(len(x)) % 2, epochs=2, batch_size=len(x), verbose=0)
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, layer.weights, strict=True)]
    trainable = [w.trainable for w in layer.weights]
    c.true("SavedModelLayer fine-tune (Adam) changes every trainable weight",
           all(ch for ch, t in zip(changed, trainable, strict=True) if t), [sum(changed), sum(trainable)])
    moving = [ch for ch, w in zip(changed, layer.weights, strict=True) if "moving_" in w.name]
    c.true("SavedModelLayer fine-tune updates BatchNorm moving statistics", all(moving),
           [sum(moving), len(moving)])


def main():
    path, probe, tol = read_args()
    c = Checks("keras3_layer")
    c.run("SavedModelLayer", lambda c: finetune(c, path, probe, tol))
    c.emit()


if __name__ == "__main__":
    main()
