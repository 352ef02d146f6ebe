"""2D encoders from `keras.applications`: DenseNet-121, the paper's fundus-grading backbone.

`DenseNetEncoder` puts `keras.applications.DenseNet121` (without its
classifier) behind the same interface as `UNetEncoder`: a registered
functional `keras.Model` subclass whose `get_config` mirrors its arguments,
with `pyramid_outputs`, `skips_model()`, `min_input_size`, `divisible_by`,
`dim` and `input_channels`. So the tasks, the training loop and every export
format treat both encoders alike, and the attributes survive serialisation.
"""

import inspect
import os

import keras

from ssl3d_keras.config import check_int, reject_unknown_kwargs
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models.dtype import dtype_policy
from ssl3d_keras.models.pyramid import PyramidEncoder

# Keyword arguments passed on to Keras (the name is an argument of its own).
_KERAS_KWARGS = ("trainable", "dtype")

# Five stride-2 stages: conv1, pool1, and the transitions pool2..pool4.
_STRIDE = 32

# The activation that ends each stage of keras.applications' DenseNet, by pyramid name
# (stride 2, 4, 8, 16, 32; 64, 256, 512, 1024, 1024 channels).
_PYRAMID_LAYERS = {
    "skip_1": "conv1_relu",
    "skip_2": "pool2_relu",
    "skip_3": "pool3_relu",
    "skip_4": "pool4_relu",
    "bottleneck": "relu",
}




@keras.saving.register_keras_serializable(package="ssl3d")
class DenseNetEncoder(PyramidEncoder):
    """DenseNet-121 without its classifier, as a 2D encoder for every proxy task.

    Wraps `keras.applications.DenseNet121(include_top=False, pooling=None)`
    built on a dynamic-size input `(None, None, input_channels)`, so one set of
    weights runs on patches and on whole images of any size >= 32. Weights are
    randomly initialised by default: ImageNet weights are downloaded by Keras
    on first use (into `~/.keras/models/`), which needs network access; with
    `weights="imagenet"` a cached file is used without it.

    Args:
        input_channels: int, number of image channels `C`. Default 3.
        weights: `None` (random initialisation, default: convolution
            kernels from `he_normal`, as the DenseNet authors), `"imagenet"`
            (only for `input_channels=3`; downloaded or read from the Keras
            cache) or the path of a weights file of
            `keras.applications.DenseNet121(include_top=False)`. A config
            that names `"imagenet"` needs those weights again to deserialise.
        input_size: `None` (dynamic spatial size, default), an int (square) or
            a tuple `(H, W)`; every given size must be >= 32.
        name: str, model name. Default `"densenet121_encoder"`.
        **kwargs: only `trainable` and `dtype` (a dtype policy such as
            `"mixed_bfloat16"`, applied to every layer; default: the global
            policy). Any other key is a `ConfigError` naming it.

    Input shape:
        `(batch, H, W, C)` with `H, W >= min_input_size = 32`; sizes divisible
        by 32 keep the pyramid outputs aligned for a decoder. Intensities as
        the recipe prepared them (the ImageNet weights expect
        `keras.applications.densenet.preprocess_input`).

    Output shape:
        `(batch, ceil(H / 32), ceil(W / 32), 1024)` (`H // 32` for multiples of 32).

    Attributes:
        pyramid_outputs: dict of symbolic tensors, `"skip_1".."skip_4"` (strides
            2, 4, 8, 16 with 64, 256, 512, 1024 channels: the activations that
            end the stem and the first three dense blocks) and `"bottleneck"`
            (stride 32, 1024 channels, the same tensor as the output).
        min_input_size: int, 32.
        divisible_by: int, 32.
        dim: int, 2.
        input_channels: as given.

    Raises:
        ConfigError: an invalid argument or an unknown keyword argument, or
            ImageNet weights that cannot be loaded.
        ConfigError (a `ValueError`): a call on an input whose rank, channels
            or spatial size cannot be used (key `"input_shape"`).

    Example:
    ```python
    from ssl3d_keras.models import DenseNetEncoder
    encoder = DenseNetEncoder(input_channels=3)
    features = encoder(np.zeros((2, 64, 64, 3), "float32"))  # (2, 2, 2, 1024)
    ```
    """

    dim = 2
    min_input_size = _STRIDE
    divisible_by = _STRIDE

    def __init__(
        self,
        input_channels=3,
        weights=None,
        input_size=None,
        name="densenet121_encoder",
        **kwargs,
    ):
        reject_unknown_kwargs("DenseNetEncoder", kwargs, _KERAS_KWARGS,
                              known=inspect.signature(DenseNetEncoder.__init__).parameters)
        check_int("input_channels", input_channels)
        _check_weights(weights, input_channels)
        spatial = _spatial_size(input_size)
        dtype = kwargs.pop("dtype", None)

        inputs = keras.Input(shape=(*spatial, input_channels), name="image")
        try:
            with dtype_policy(dtype):
                backbone = keras.applications.DenseNet121(
                    include_top=False, weights=weights, input_tensor=inputs, pooling=None
                )
        except ConfigError:
            raise
        except Exception as e:  # a failed download or an unreadable weights file
            if weights is None:
                raise
            raise ConfigError(
                "weights",
                f"could not load DenseNet-121 weights ({type(e).__name__}: {e}); ImageNet "
                "weights need network access or a cached file in ~/.keras/models/. "
                f"Received: weights={weights!r}",
            ) from None
        if weights is None:
            _he_normal_kernels(backbone)
        pyramid = {key: backbone.get_layer(layer).output for key, layer in _PYRAMID_LAYERS.items()}

        # `inputs` is a tensor (not the backbone's one-element list) so calls take a tensor.
        super().__init__(inputs=inputs, outputs=backbone.output, name=name, **kwargs)
        self._dtype_arg = dtype
        self.input_channels = input_channels
        self.weights_source = weights
        self.input_size = input_size
        self.pyramid_outputs = pyramid

    def _minimum_size_text(self):
        return f"{self.min_input_size} for DenseNet-121 (five stride-2 stages)"

    def get_config(self):
        return {
            "input_channels": self.input_channels,
            "weights": self.weights_source,
            **self._base_config(),
        }


def _he_normal_kernels(model):
    """Redraw every convolution kernel of a freshly built model from `he_normal`.

    `keras.applications` builds its layers with Keras' default Glorot
    initialiser and takes no initialiser argument. DenseNet is a ReLU network
    and its authors (Huang et al. 2017) initialised it as He et al. (2015) do,
    as our U-Net does; the layer's `kernel_initializer` is updated to match.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.kernel_initializer = keras.initializers.HeNormal()
            layer.kernel.assign(layer.kernel_initializer(layer.kernel.shape, layer.kernel.dtype))


def _check_weights(weights, input_channels):
    if weights is None:
        return
    if weights == "imagenet":
        if input_channels != 3:
            raise ConfigError(
                "weights",
                "ImageNet weights exist for 3 input channels only; use weights=None, or "
                "load a 3-channel encoder and adapt it with "
                "ssl3d_keras.models.adapt_input_channels. "
                f"Received: weights='imagenet', input_channels={input_channels}",
            )
        return
    if not isinstance(weights, (str, os.PathLike)) or not os.path.isfile(weights):
        raise ConfigError(
            "weights",
            f"expected None, 'imagenet' or the path of an existing weights file. "
            f"Received: weights={weights!r}",
        )


def _spatial_size(input_size):
    if input_size is None:
        return (None, None)
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    if (
        isinstance(input_size, (tuple, list))
        and len(input_size) == 2
        and all(s is None or (isinstance(s, int) and not isinstance(s, bool)) for s in input_size)
    ):
        for size in input_size:
            if size is not None and size < _STRIDE:
                raise ConfigError(
                    "input_size",
                    f"input size {size} is smaller than {_STRIDE} for DenseNet-121 (five "
                    f"stride-2 stages). Received: input_size={input_size!r}",
                )
        return tuple(input_size)
    raise ConfigError(
        "input_size",
        f"expected None, an int or a tuple (H, W) of a 2D encoder. Received: "
        f"input_size={input_size!r}",
    )


def densenet121_encoder(input_shape=(None, None, 3), weights=None, name="densenet121_encoder"):
    """A `DenseNetEncoder` for images of shape `input_shape` (a shortcut).

    Args:
        input_shape: tuple `(H, W, C)`; `H` and `W` may be `None` (dynamic,
            the default). With `weights="imagenet"` `C` must be 3.
        weights: `None`, `"imagenet"` or the path of a weights file.
        name: str, model name.

    Returns:
        A `DenseNetEncoder`, `(batch, H, W, C)` -> `(batch, H // 32, W // 32, 1024)`.

    Example:
    ```python
    from ssl3d_keras.models import densenet121_encoder
    encoder = densenet121_encoder((224, 224, 3))
    ```
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ConfigError(
            "input_shape",
            f"expected (H, W, C) for a 2D encoder. Received: input_shape={input_shape}",
        )
    size = None if input_shape[:2] == (None, None) else list(input_shape[:2])
    return DenseNetEncoder(
        input_channels=input_shape[-1], weights=weights, input_size=size, name=name
    )
