"""The U-Net encoder of Taleb et al. (2020): the backbone every proxy task shares.

One implementation serves 2D and 3D (`dim`). Spatial dimensions are dynamic
unless `input_size` is given, so one set of weights runs on patches and on
whole volumes.
"""

import inspect
import math

import keras

from ssl3d_keras.config import check_int, reject_unknown_kwargs
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models.pyramid import PyramidEncoder
from ssl3d_keras.models.remat import recompute

NORMS = ("batch", "group", "instance", "none")

# He et al. (2015) for convolutions followed by ReLU, as the authors' U-Net
# (`conv3d_block(kernel_initializer="he_normal")`); Keras would default to Glorot.
KERNEL_INITIALIZER = "he_normal"

# TensorFlow 2.21's oneDNN bfloat16 Conv3DBackpropFilter now and then returns Inf/NaN
# when the input is smaller than the 3-voxel kernel (measured: 6 of 30 calls on
# (256, 2, 2, 2, 16) -> 32 filters; float32 never): it turned a mixed_bfloat16 CPC
# run's bottleneck kernels to NaN in its first steps. Only the bottleneck's input can
# be that small (>= min_input_size / 2**depth = 2 voxels), so under a bfloat16 policy
# its two convolutions compute in float32 unless `input_size` rules such inputs out;
# at that size they cost next to nothing.
SMALLEST_SAFE_BFLOAT16_CONV_INPUT = 3

# Keyword arguments passed on to Keras (the name is an argument of its own).
_KERAS_KWARGS = ("trainable", "dtype")


def _bottleneck_conv_dtype(dtype, spatial, depth):
    """The dtype of the bottleneck convolutions: float32 where bfloat16 may break."""
    policy = keras.config.dtype_policy() if dtype is None else keras.dtype_policies.get(dtype)
    if policy.compute_dtype != "bfloat16":
        return dtype
    sizes = [None if s is None else s // 2**depth for s in spatial]
    if all(s is not None and s >= SMALLEST_SAFE_BFLOAT16_CONV_INPUT for s in sizes):
        return dtype
    return "float32"


def _norm_layer(norm, filters, name, dtype):
    if norm == "batch":
        return keras.layers.BatchNormalization(name=name, dtype=dtype)
    if norm == "group":
        # At most 8 groups, and always a divisor of `filters` (tiny test encoders).
        return keras.layers.GroupNormalization(groups=math.gcd(filters, 8), name=name, dtype=dtype)
    if norm == "instance":
        return keras.layers.GroupNormalization(groups=-1, name=name, dtype=dtype)
    return None


@keras.saving.register_keras_serializable(package="ssl3d")
class UNetEncoder(PyramidEncoder):
    """U-Net encoder (contracting path), 2D or 3D.

    Level `l` (0-based, `0..depth-1`) has two blocks
    `Conv(3, same) -> ReLU -> Norm` (kernels drawn from `he_normal`, as the
    authors' code) with `base_filters * 2**l` filters, a
    Dropout between the two blocks and a MaxPool(2) after the level. Then a
    bottleneck level of two blocks with `bottleneck_filters`, then one more
    MaxPool(2) if `final_pool`. The paper encoder (the defaults) has
    16/32/64/128 filters, a 256-filter bottleneck and about 3.54 M parameters
    for one input channel.

    Args:
        input_channels: int, number of image channels `C`. Default 1.
        dim: int, 2 or 3 spatial dimensions. Default 3.
        depth: int >= 1, number of levels before the bottleneck. Default 4.
        base_filters: int, filters of level 0. Default 16.
        bottleneck_filters: int or `None`, filters of the bottleneck level;
            `None` means `base_filters * 2**depth`.
        norm: `"batch"`, `"group"` (GroupNormalization with `gcd(filters, 8)`
            groups), `"instance"` (GroupNormalization with one group per
            channel) or `"none"`. Default `"batch"`.
        dropout: float in `[0, 1)`, rate of the Dropout between the two blocks
            of each level (and of the bottleneck). Default 0.5.
        final_pool: bool, MaxPool(2) after the bottleneck. Default `True`.
        input_size: `None` (dynamic spatial size), an int (same size on every
            axis) or a tuple of `dim` ints.
        remat: bool, rematerialise (gradient checkpointing) every block
            (`[Dropout ->] Conv -> ReLU -> Norm`) in training: only a block's
            input is kept for the backward pass, which runs the block again
            (one more forward pass per step) instead of holding its
            activations. For 128^3 and larger inputs (the measured savings are
            in docs/PERFORMANCE.md, "Precision and memory"). Loss, gradients
            and BatchNorm statistics equal those without it, and Dropout draws
            the same mask in the recomputation
            (`ssl3d_keras.models.remat.recompute`). Inference and the skips
            model are unaffected, and the weights are those of `remat=False`.
            Default `False`.
        name: str, model name. Default `"unet_encoder"`.
        **kwargs: only `trainable` and `dtype` (a dtype policy such as
            `"mixed_bfloat16"`, applied to every layer; default: the global
            policy). Under a bfloat16 policy the bottleneck's two
            convolutions compute in float32 unless `input_size` keeps their
            input at 3 voxels or more per axis: TensorFlow's oneDNN bfloat16
            kernel gradient now and then returns NaN on 2-voxel inputs. Any
            other key is a `ConfigError` naming it.

    Input shape:
        `(batch, D, H, W, C)` (3D) or `(batch, H, W, C)` (2D). Every spatial
        size must be at least `min_input_size = 2**(depth + final_pool)`; sizes
        divisible by `2**depth` keep the skips aligned for a U-Net decoder.

    Output shape:
        `(batch, D // s, H // s, W // s, F)` with `s = min_input_size` and
        `F = bottleneck_filters`.

    Attributes:
        pyramid_outputs: dict of symbolic tensors, `"skip_1".."skip_{depth}"`
            (the last block of each level, before pooling) and `"bottleneck"`.
        min_input_size: int, `2**(depth + final_pool)`.
        divisible_by: int, `2**depth`.
        dim, input_channels: as given.

    Raises:
        ConfigError: an invalid argument or an unknown keyword argument.
        ConfigError (a `ValueError`): a call on an input whose rank,
            channels or spatial size cannot be used (key `"input_shape"`).

    Example:
    ```python
    from ssl3d_keras.models import UNetEncoder
    encoder = UNetEncoder(input_channels=1, depth=2, base_filters=4)
    features = encoder(np.zeros((2, 32, 32, 32, 1), "float32"))  # (2, 4, 4, 4, 16)
    ```
    """

    def __init__(
        self,
        input_channels=1,
        dim=3,
        depth=4,
        base_filters=16,
        bottleneck_filters=None,
        norm="batch",
        dropout=0.5,
        final_pool=True,
        input_size=None,
        remat=False,
        name="unet_encoder",
        **kwargs,
    ):
        reject_unknown_kwargs("UNetEncoder", kwargs, _KERAS_KWARGS,
                              known=inspect.signature(UNetEncoder.__init__).parameters)
        check_int("input_channels", input_channels, 1)
        if dim not in (2, 3):
            raise ConfigError("dim", f"expected 2 or 3. Received: dim={dim!r}")
        check_int("depth", depth, 1)
        check_int("base_filters", base_filters, 1)
        if bottleneck_filters is not None:
            check_int("bottleneck_filters", bottleneck_filters, 1)
        if norm not in NORMS:
            raise ConfigError("norm", f"expected one of {NORMS}. Received: norm={norm!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(
                "dropout", f"expected a rate in [0, 1). Received: dropout={dropout!r}"
            )
        if not isinstance(remat, bool):
            raise ConfigError("remat", f"expected true or false. Received: remat={remat!r}")
        spatial = _spatial_size(input_size, dim)
        # A dtype policy (e.g. "mixed_bfloat16") applies to every layer; None = global policy.
        dtype = kwargs.pop("dtype", None)
        pools = depth + int(bool(final_pool))
        min_size = 2**pools
        for size in spatial:
            if size is not None and size < min_size:
                raise ConfigError(
                    "input_size",
                    f"input size {size} is smaller than 2**{pools} = {min_size} for a "
                    f"depth-{depth} encoder{' with final pooling' if final_pool else ''}. "
                    f"Received: input_size={input_size!r}",
                )

        conv = keras.layers.Conv3D if dim == 3 else keras.layers.Conv2D
        pool = keras.layers.MaxPooling3D if dim == 3 else keras.layers.MaxPooling2D
        filters = [base_filters * 2**level for level in range(depth)]
        filters.append(bottleneck_filters or base_filters * 2**depth)

        inputs = keras.Input(shape=(*spatial, input_channels), name="image")
        x = inputs
        pyramid = {}
        # The remat segments: each block (its Dropout, Conv, ReLU, Norm) by layer
        # names, with the pool that follows it, if any.
        segments = []
        bottleneck_conv_dtype = _bottleneck_conv_dtype(dtype, spatial, depth)
        for level, width in enumerate(filters):
            prefix = "bottleneck" if level == depth else f"level{level + 1}"
            conv_dtype = bottleneck_conv_dtype if level == depth else dtype
            for block in (1, 2):
                layers = []
                if block == 2 and dropout > 0:
                    layers.append(keras.layers.Dropout(dropout, name=f"{prefix}_dropout",
                                                       dtype=dtype))
                layers.append(conv(width, 3, padding="same", kernel_initializer=KERNEL_INITIALIZER,
                                   name=f"{prefix}_conv{block}", dtype=conv_dtype))
                layers.append(keras.layers.ReLU(name=f"{prefix}_relu{block}", dtype=dtype))
                norm_layer = _norm_layer(norm, width, f"{prefix}_norm{block}", dtype)
                if norm_layer is not None:
                    layers.append(norm_layer)
                for layer in layers:
                    x = layer(x)
                segments.append([tuple(layer.name for layer in layers), None])
            if level < depth:
                pyramid[f"skip_{level + 1}"] = x
                segments[-1][1] = f"{prefix}_pool"
                x = pool(2, name=f"{prefix}_pool", dtype=dtype)(x)
            else:
                pyramid["bottleneck"] = x
        if final_pool:
            x = pool(2, name="final_pool", dtype=dtype)(x)

        super().__init__(inputs=inputs, outputs=x, name=name, **kwargs)
        self._dtype_arg = dtype
        self.input_channels = input_channels
        self.dim = dim
        self.depth = depth
        self.base_filters = base_filters
        self.bottleneck_filters = bottleneck_filters
        self.norm = norm
        self.dropout = dropout
        self.final_pool = bool(final_pool)
        self.input_size = input_size
        self.remat = remat
        self._segments = tuple(tuple(segment) for segment in segments)
        self.min_input_size = min_size
        # The skips of level k have stride 2**(k-1): sizes divisible by 2**depth align them all.
        self.divisible_by = 2**depth
        self.pyramid_outputs = pyramid

    def call(self, inputs, training=None, mask=None):
        if not (self.remat and training):
            return super().call(inputs, training=training, mask=mask)
        self._check_input_shape(tuple(inputs.shape))
        # The functional graph's own layers, called block by block so that each
        # block is one recomputed segment. Blocks, not whole levels: the first
        # level holds most of the activations, and recomputing it whole would
        # bring them all back at once in its backward pass (measured: a level
        # per segment saved half as much at 128^3). The pools stay outside:
        # their backward needs their input and output anyway.
        x = keras.ops.cast(inputs, self.inputs[0].dtype)
        for names, pool_name in self._segments:
            layers = [self.get_layer(name) for name in names]
            x = recompute(lambda t, layers=layers: _run(layers, t, training), x, layers)
            if pool_name is not None:
                x = self.get_layer(pool_name)(x)
        if self.final_pool:
            x = self.get_layer("final_pool")(x)
        return x

    def _minimum_size_text(self):
        pools = self.depth + int(self.final_pool)
        pooling = " with final pooling" if self.final_pool else ""
        return f"2**{pools} = {self.min_input_size} for a depth-{self.depth} encoder{pooling}"

    def get_config(self):
        return {
            "input_channels": self.input_channels,
            "dim": self.dim,
            "depth": self.depth,
            "base_filters": self.base_filters,
            "bottleneck_filters": self.bottleneck_filters,
            "norm": self.norm,
            "dropout": self.dropout,
            "final_pool": self.final_pool,
            "remat": self.remat,
            **self._base_config(),
        }


def _run(layers, x, training):
    for layer in layers:
        x = layer(x, training=training)
    return x


def _spatial_size(input_size, dim):
    if input_size is None:
        return (None,) * dim
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        return (input_size,) * dim
    if isinstance(input_size, (tuple, list)) and len(input_size) == dim:
        if all(s is None or (isinstance(s, int) and s > 0) for s in input_size):
            return tuple(input_size)
    raise ConfigError(
        "input_size",
        f"expected None, an int or a tuple of {dim} ints. Received: input_size={input_size!r}",
    )
