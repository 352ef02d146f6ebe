"""Fine-tune an exported SavedModel inside a Keras 3 model with `SavedModelLayer`.

    python examples/finetune_keras3.py --export exports/demo/export
    python examples/finetune_keras3.py --tiny        # makes a tiny export first

`hub.KerasLayer` does not work in Keras 3 models and `keras.layers.TFSMLayer`
cannot fine-tune with Adam; `ssl3d_keras.export.SavedModelLayer` can. Here the
layer returns the skip connections (`output="skips"`) and a small U-Net-style
decoder segments the phantoms' structures, trained with Adam.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", help="an `ssl3d export` folder (or its savedmodel/)")
    parser.add_argument("--tiny", action="store_true", help="tiny export, data and training")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    from pretrain_and_export import savedmodel_for

    from ssl3d_keras.data.phantoms import PHANTOM_LABELS, make_phantom
    from ssl3d_keras.export import SavedModelLayer

    path = savedmodel_for(parser, args)

    size, n, epochs = (16, 2, 2) if args.tiny else (32, 8, args.epochs)
    pairs = [make_phantom(seed, size=size) for seed in range(n)]
    x = np.stack([image for image, _ in pairs]).astype("float32")
    y = np.stack([label for _, label in pairs])
    classes = len(PHANTOM_LABELS)

    inputs = keras.Input((size, size, size, 1))
    skips = SavedModelLayer(path, output="skips", name="pretrained_encoder")(inputs)
    # Decoder: bring the bottleneck back to full size and join the first skip.
    up = keras.layers.UpSampling3D(size // skips["bottleneck"].shape[1])(skips["bottleneck"])
    joined = keras.layers.Concatenate()([up, skips["skip_1"]])
    hidden = keras.layers.Conv3D(8, 3, padding="same", activation="relu")(joined)
    logits = keras.layers.Conv3D(classes, 1)(hidden)
    model = keras.Model(inputs, logits)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    encoder = model.get_layer("pretrained_encoder")
    before = [w.numpy().copy() for w in encoder.trainable_weights]
    history = model.fit(x, y, epochs=epochs, batch_size=2, verbose=0 if args.tiny else 2)
    changed = sum(not np.array_equal(b, w.numpy())
                  for b, w in zip(before, encoder.trainable_weights, strict=True))
    print(f"SavedModelLayer fine-tuned {changed}/{len(before)} encoder weights with Adam; "
          f"voxel accuracy {history.history['accuracy'][-1]:.3f}")
    assert changed == len(before)


if __name__ == "__main__":
    main()
