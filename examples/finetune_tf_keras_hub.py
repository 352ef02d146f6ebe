"""Fine-tune an exported encoder inside a tf_keras (Keras 2) model through TF Hub.

    python examples/finetune_tf_keras_hub.py --export exports/demo/export
    python examples/finetune_tf_keras_hub.py --tiny        # makes a tiny export first

`hub.KerasLayer(path, trainable=True)` reads the SavedModel's `__call__`,
`variables`, `trainable_variables` and `regularization_losses`; BatchNorm moving
statistics are updated by the `training=True` trace. The downstream task here
is a toy one (is the phantom flipped left-right?) that needs no data download.
Only tensorflow, tensorflow-hub and tf-keras are needed to run the model; the
phantoms come from ssl3d_keras.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def flip_dataset(n, size, seed=0):
    """Phantoms, half of them flipped along axis 0; label 1 = flipped."""
    import numpy as np

    from ssl3d_keras.data.phantoms import make_phantom

    images, labels = [], []
    for i in range(n):
        image, _ = make_phantom(seed + i, size=size)
        flipped = i % 2
        images.append(image[::-1] if flipped else image)
        labels.append(flipped)
    return np.stack(images).astype("float32"), np.array(labels)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", help="an `ssl3d export` folder (or its savedmodel/)")
    parser.add_argument("--tiny", action="store_true", help="tiny export, data and training")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    import tensorflow_hub as hub
    import tf_keras
    from pretrain_and_export import savedmodel_for

    path = savedmodel_for(parser, args)

    size, n, epochs = (16, 4, 2) if args.tiny else (32, 16, args.epochs)
    x, y = flip_dataset(n, size)
    encoder = hub.KerasLayer(path, trainable=True, name="pretrained_encoder")
    inputs = tf_keras.Input(x.shape[1:])
    features = encoder(inputs)
    pooled = tf_keras.layers.Lambda(lambda t: tf.reduce_mean(t, axis=[1, 2, 3]))(features)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(2)(pooled))
    model.compile(tf_keras.optimizers.Adam(1e-3),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    before = [w.numpy().copy() for w in encoder.trainable_weights]
    model.fit(x, y, epochs=epochs, batch_size=min(4, n), verbose=0 if args.tiny else 2)
    changed = sum(not np.array_equal(b, w.numpy())
                  for b, w in zip(before, encoder.trainable_weights, strict=True))
    print(f"hub.KerasLayer fine-tuned {changed}/{len(before)} encoder weights in tf_keras")
    assert changed == len(before)


if __name__ == "__main__":
    main()
