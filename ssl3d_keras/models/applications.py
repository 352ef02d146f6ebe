"""2D encoders from `keras.applications` (the paper's fundus-grading backbone)."""

import keras

from ssl3d_keras.errors import ConfigError


def densenet121_encoder(input_shape=(224, 224, 3), weights=None, name="densenet121_encoder"):
    """DenseNet-121 without its classifier, as a 2D encoder for the tasks.

    Wraps `keras.applications.DenseNet121(include_top=False, pooling=None)`.
    The result is a plain functional `keras.Model` (serialisable as is) with
    the attributes the tasks read from an encoder: `dim = 2`,
    `input_channels`, and `min_input_size = 32` (five stride-2 stages).

    ImageNet weights are downloaded by Keras on first use; this project's
    build machines have no network, so the default is `weights=None` (random
    initialisation). Pass `"imagenet"` where downloads work, or the path of a
    weights file saved earlier.

    Args:
        input_shape: tuple `(H, W, C)`; `H` and `W` may be `None`. With
            `weights="imagenet"` `C` must be 3. Default `(224, 224, 3)`.
        weights: `None`, `"imagenet"` or a path to a `.weights.h5` file.
        name: str, model name.

    Input shape:
        `(batch, H, W, C)`, intensities as `keras.applications.densenet.preprocess_input`
        expects for ImageNet weights.

    Output shape:
        `(batch, H // 32, W // 32, 1024)`.

    Example:
    ```python
    from ssl3d_keras.models.applications import densenet121_encoder
    encoder = densenet121_encoder((224, 224, 3))
    ```
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ConfigError(
            "input_shape",
            f"expected (H, W, C) for a 2D encoder. Received: input_shape={input_shape}",
        )
    for size in input_shape[:2]:
        if size is not None and size < 32:
            raise ConfigError(
                "input_shape",
                f"input size {size} is smaller than 32 for DenseNet-121. "
                f"Received: input_shape={input_shape}",
            )
    backbone = keras.applications.DenseNet121(
        include_top=False,
        weights=weights,
        input_shape=input_shape,
        pooling=None,
    )
    model = keras.Model(backbone.input, backbone.output, name=name)
    model.dim = 2
    model.input_channels = input_shape[-1]
    model.min_input_size = 32
    return model
