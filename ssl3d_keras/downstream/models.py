"""The networks the paper fine-tunes on top of a pretrained encoder, and how to freeze it.

- `build_segmentation_model`: the encoder's skips plus the paper's U-Net decoder
  (transposed convolution up, concatenate the skip, two conv blocks), softmax
  over classes (BraTS, pancreas).
- `build_classification_model`: the encoder's features, global average
  pooling, a hidden Dense layer and a softmax or an ordinal head (fundus
  diabetic-retinopathy grading); `ordinal_targets` / `decode_ordinal` convert
  grades to and from the ordinal head's cumulative encoding.
- `set_encoder_trainable`, `encoder_variables`, `decoder_variables`,
  `trainable_variables_of`: the warm-up schedule of the paper (encoder frozen,
  then unfrozen with a fresh optimiser).

The encoder inside these models is the encoder itself (shared weights, no
copy): a `PyramidEncoder` or its `skips_model()`, or a
`ssl3d_keras.export.SavedModelLayer` of an exported one.
"""

import keras
import numpy as np
import tensorflow as tf

from ssl3d_keras.config import closest
from ssl3d_keras.errors import ConfigError, DataError
from ssl3d_keras.models.unet import NORMS, _norm_layer

__all__ = [
    "CLASSIFICATION_HEADS",
    "build_classification_model",
    "build_segmentation_model",
    "decode_ordinal",
    "decoder_variables",
    "encoder_layer",
    "encoder_variables",
    "ordinal_targets",
    "probe_strides",
    "set_encoder_trainable",
    "trainable_variables_of",
]

CLASSIFICATION_HEADS = ("softmax", "ordinal")

# Probing is symbolic (shape inference, no arithmetic), so a large size costs nothing and
# resolves strides up to 2**7 exactly.
_SYMBOLIC_PROBE = 256
# Fallback for a callable without `compute_output_spec`: a real forward pass on zeros.
_EAGER_PROBE = 64


def _check_num_classes(num_classes, minimum=2):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < minimum:
        raise ConfigError(
            "num_classes",
            f"expected an int >= {minimum} (background counts as a class). "
            f"Received: num_classes={num_classes!r}",
        )


def _check_dim_channels(dim, input_channels):
    if dim not in (2, 3):
        raise ConfigError("dim", f"expected 2 or 3. Received: dim={dim!r}")
    if isinstance(input_channels, bool) or not isinstance(input_channels, int) or input_channels < 1:
        raise ConfigError(
            "input_channels", f"expected an int >= 1. Received: input_channels={input_channels!r}"
        )


def _fixed_probe_size(skips, dim):
    """The spatial size of a callable built for one fixed input size, else `None`."""
    inputs = getattr(skips, "inputs", None)
    if not inputs or len(inputs) != 1:
        return None
    spatial = tuple(inputs[0].shape)[1:-1]
    if len(spatial) == dim and all(s is not None for s in spatial):
        return spatial
    return None


def probe_strides(skips, *, dim, input_channels):
    """Strides and channel counts of each output of a skips callable, found by probing.

    The callable is run once on an input of a probe size `P` per axis and each
    output's stride is `P // size`. Keras objects (a `skips_model()`, a
    `SavedModelLayer`) are probed symbolically with `compute_output_spec` at
    `P = 256` (shape inference only, no arithmetic, so any stride up to 128 is
    exact); another callable runs once on zeros of `P = 64`. A callable built
    for one fixed input size is probed at that size.

    Args:
        skips: callable mapping `(batch, *spatial, C)` to a dict of tensors
            (`skip_1`.., `bottleneck`, `features`).
        dim: int, 2 or 3 spatial dimensions.
        input_channels: int, channels `C`.

    Returns:
        dict `name -> (stride, channels)` for every output of `skips`.

    Raises:
        ConfigError: the callable does not return a dict, or an output's size
            does not divide the probe size on every axis.
    """
    fixed = _fixed_probe_size(skips, dim)
    if hasattr(skips, "compute_output_spec"):
        shape = fixed or (_SYMBOLIC_PROBE,) * dim
        outputs = skips.compute_output_spec(keras.KerasTensor((1, *shape, input_channels)))
    else:
        shape = fixed or (_EAGER_PROBE,) * dim
        outputs = skips(np.zeros((1, *shape, input_channels), "float32"))
    if not isinstance(outputs, dict):
        raise ConfigError(
            "skips",
            "expected a callable returning a dict of skips (skips_model() or "
            f"SavedModelLayer(output='skips')). Received: output {type(outputs).__name__}",
        )
    strides = {}
    for key, tensor in outputs.items():
        out = tuple(int(s) for s in tuple(tensor.shape)[1:-1])
        axis_strides = {None}
        if len(out) == dim:
            axis_strides = {p // s if s and p % s == 0 else None for p, s in zip(shape, out, strict=True)}
        if len(axis_strides) != 1 or None in axis_strides:
            raise ConfigError(
                "skips",
                f"output {key!r} has spatial size {out} for a probe of size {shape}; "
                f"expected one integer stride on every axis. Received: {out}",
            )
        strides[key] = (axis_strides.pop(), int(tensor.shape[-1]))
    return strides


def _decoder_plan(strides, decoder_filters):
    """`[(skip key or None, filters), ...]` per x2 up-sampling stage, coarsest first."""
    if "bottleneck" not in strides:
        raise ConfigError(
            "skips",
            f"the skips dict has no 'bottleneck'. Received: keys {sorted(strides)}",
        )
    skip_keys = sorted((k for k in strides if k.startswith("skip_")), key=lambda k: -strides[k][0])
    stride, _ = strides["bottleneck"]
    plan = []
    for key in skip_keys:
        skip_stride, channels = strides[key]
        if skip_stride * 2 != stride:
            raise ConfigError(
                "skips",
                f"each skip must be at half the stride of the next coarser output; {key!r} "
                f"is at stride {skip_stride} below stride {stride}. Received: strides "
                f"{ {k: s for k, (s, _) in strides.items()} }",
            )
        plan.append((key, channels))
        stride = skip_stride
    # Encoders without a full-resolution skip (DenseNet: finest at stride 2): keep going up.
    channels = plan[-1][1] if plan else strides["bottleneck"][1]
    while stride > 1:
        if stride % 2:
            raise ConfigError(
                "skips", f"the finest output's stride {stride} is not a power of 2. "
                f"Received: strides { {k: s for k, (s, _) in strides.items()} }",
            )
        channels = max(channels // 2, 1)
        plan.append((None, channels))
        stride //= 2
    if decoder_filters is not None:
        filters = list(decoder_filters)
        if len(filters) != len(plan) or any(
            isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in filters
        ):
            raise ConfigError(
                "decoder_filters",
                f"expected {len(plan)} positive ints, one per up-sampling stage (coarsest "
                f"first). Received: decoder_filters={decoder_filters!r}",
            )
        plan = [(key, f) for (key, _), f in zip(plan, filters, strict=True)]
    return plan


def build_segmentation_model(
    skips,
    num_classes,
    *,
    dim,
    input_channels,
    decoder_filters=None,
    norm="batch",
    name="segmentation",
):
    """The pretrained encoder plus the paper's U-Net decoder, softmax over classes.

    Starting from `bottleneck`, for each skip from the coarsest to the finest:
    a transposed convolution (kernel 2, stride 2) to the skip's channel count,
    concatenation with the skip, then two blocks `Conv(3, same) -> ReLU -> Norm`
    with that channel count (the encoder's counts in reverse). If the finest
    skip is not at full resolution (DenseNet: stride 2), further x2 stages
    (transposed conv and two blocks, half the channels each time) reach full
    resolution. A 1x1 convolution (`logits`) and a softmax (`probabilities`),
    both float32 so mixed precision stays stable, end the model.

    Each output's stride is found by probing `skips` once (see
    `probe_strides`); skips must double in stride from the finest to
    `bottleneck`.

    Args:
        skips: the encoder's skips: a callable Keras object mapping the input
            to the dict `skip_1`.. (finest first), `bottleneck`, `features`,
            i.e. `encoder.skips_model()` or `SavedModelLayer(path,
            output="skips")`. An encoder with a `skips_model()` method is also
            accepted. Its weights are the model's (shared, not copied).
        num_classes: int >= 2, number of classes including background.
        dim: int, 2 or 3 spatial dimensions.
        input_channels: int, channels `C` of the images.
        decoder_filters: optional list of ints, the channel count of each
            up-sampling stage, coarsest first; default the skips' counts (and
            halving beyond the finest skip).
        norm: `"batch"` (default), `"group"`, `"instance"` or `"none"`, the
            decoder's normalisation.
        name: str, model name. Default `"segmentation"`.

    Input shape:
        `(batch, D, H, W, C)` (3D) or `(batch, H, W, C)` (2D), spatial sizes
        dynamic; every size must be divisible by `model.divisible_by` (the
        bottleneck's stride: `2**depth` for a U-Net encoder, 32 for DenseNet)
        and at least the encoder's `min_input_size`.

    Output shape:
        `(batch, D, H, W, num_classes)` (or `(batch, H, W, num_classes)`),
        float32 probabilities summing to 1 over the last axis.

    Returns:
        A functional `keras.Model` with attributes `encoder_layer` (the skips
        layer inside it, see `encoder_variables` and `set_encoder_trainable`)
        and `divisible_by` (int).

    Raises:
        ConfigError: `num_classes < 2`, an unknown `norm`, a bad `dim`,
            `input_channels` or `decoder_filters`, or skips whose strides do
            not form a x2 pyramid.

    Example:
    ```python
    from ssl3d_keras.downstream.models import build_segmentation_model
    from ssl3d_keras.models.factory import build_encoder
    encoder = build_encoder({"depth": 2, "base_filters": 4}, input_channels=1, dim=3)
    model = build_segmentation_model(encoder.skips_model(), 3, dim=3, input_channels=1)
    probabilities = model(np.zeros((1, 32, 32, 32, 1), "float32"))  # (1, 32, 32, 32, 3)
    ```
    """
    _check_num_classes(num_classes)
    _check_dim_channels(dim, input_channels)
    if norm not in NORMS:
        raise ConfigError("norm", f"expected one of {NORMS}{closest(norm, NORMS)}. "
                          f"Received: norm={norm!r}")
    if hasattr(skips, "skips_model"):
        skips = skips.skips_model()
    strides = probe_strides(skips, dim=dim, input_channels=input_channels)
    plan = _decoder_plan(strides, decoder_filters)

    conv = keras.layers.Conv3D if dim == 3 else keras.layers.Conv2D
    up = keras.layers.Conv3DTranspose if dim == 3 else keras.layers.Conv2DTranspose
    inputs = keras.Input((None,) * dim + (input_channels,), name="image")
    pyramid = skips(inputs)
    x = pyramid["bottleneck"]
    for stage, (key, filters) in enumerate(plan, start=1):
        prefix = f"decoder{stage}"
        x = up(filters, 2, strides=2, name=f"{prefix}_up")(x)
        if key is not None:
            x = keras.layers.Concatenate(name=f"{prefix}_concat")([x, pyramid[key]])
        for block in (1, 2):
            x = conv(filters, 3, padding="same", name=f"{prefix}_conv{block}")(x)
            x = keras.layers.ReLU(name=f"{prefix}_relu{block}")(x)
            norm_layer = _norm_layer(norm, filters, f"{prefix}_norm{block}", None)
            if norm_layer is not None:
                x = norm_layer(x)
    # float32 so the softmax and the loss stay exact under mixed precision.
    logits = conv(num_classes, 1, name="logits", dtype="float32")(x)
    probabilities = keras.layers.Softmax(name="probabilities", dtype="float32")(logits)
    model = keras.Model(inputs, probabilities, name=name)
    model.encoder_layer = skips
    model.divisible_by = strides["bottleneck"][0]
    return model


def _encoder_input_facts(encoder, dim, input_channels):
    """`(dim, input_channels)` from the arguments, the encoder's attributes or its input."""
    if dim is None:
        dim = getattr(encoder, "dim", None)
    if input_channels is None:
        input_channels = getattr(encoder, "input_channels", None)
    inputs = getattr(encoder, "inputs", None)
    if (dim is None or input_channels is None) and inputs and len(inputs) == 1:
        shape = tuple(inputs[0].shape)
        dim = len(shape) - 2 if dim is None else dim
        input_channels = shape[-1] if input_channels is None else input_channels
    if dim is None or input_channels is None:
        raise ConfigError(
            "encoder",
            "cannot tell the encoder's dim and input_channels; pass them as arguments. "
            f"Received: dim={dim!r}, input_channels={input_channels!r}",
        )
    _check_dim_channels(dim, input_channels)
    return dim, input_channels


def build_classification_model(
    encoder,
    num_classes,
    *,
    head="softmax",
    hidden=256,
    dropout=0.5,
    name="classifier",
    dim=None,
    input_channels=None,
):
    """Encoder features, global average pooling, `Dense(hidden, relu)`, Dropout, a head.

    Args:
        encoder: a callable Keras object mapping images to features: a
            `PyramidEncoder` (e.g. `DenseNetEncoder`) or
            `SavedModelLayer(path)`. Its weights are the model's (shared).
        num_classes: int >= 2, number of classes (grades).
        head: `"softmax"` (default): `num_classes` softmax probabilities, for
            `sparse_categorical_crossentropy` on integer labels. `"ordinal"`:
            `num_classes - 1` sigmoid outputs, output `k` the probability that
            the grade exceeds `k`; targets as `ordinal_targets` encodes them
            (the authors' APTOS encoding), predictions read with
            `decode_ordinal`.
        hidden: int >= 1, units of the hidden Dense layer. Default 256.
        dropout: float in `[0, 1)`, rate after the hidden layer. Default 0.5.
        name: str, model name. Default `"classifier"`.
        dim, input_channels: ints; default the encoder's `dim` and
            `input_channels` attributes (or its input shape). Needed for a
            `SavedModelLayer`.

    Input shape:
        `(batch, H, W, C)` (2D) or `(batch, D, H, W, C)` (3D), spatial sizes
        dynamic (at least the encoder's `min_input_size`).

    Output shape:
        `(batch, num_classes)` (softmax) or `(batch, num_classes - 1)`
        (ordinal), float32 probabilities.

    Returns:
        A functional `keras.Model` with attribute `encoder_layer`.

    Raises:
        ConfigError: `num_classes < 2`, an unknown `head`, a bad `hidden` or
            `dropout`, or an encoder whose dim and channels cannot be told.

    Example:
    ```python
    from ssl3d_keras.downstream.models import build_classification_model
    from ssl3d_keras.models import DenseNetEncoder
    model = build_classification_model(DenseNetEncoder(), 5, head="ordinal")
    grades_probabilities = model(np.zeros((2, 224, 224, 3), "float32"))  # (2, 4)
    ```
    """
    _check_num_classes(num_classes)
    if head not in CLASSIFICATION_HEADS:
        raise ConfigError(
            "head",
            f"unknown head {head!r}{closest(head, CLASSIFICATION_HEADS)}; choose from "
            f"{list(CLASSIFICATION_HEADS)}. Received: head={head!r}",
        )
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ConfigError("hidden", f"expected an int >= 1. Received: hidden={hidden!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError("dropout", f"expected a rate in [0, 1). Received: dropout={dropout!r}")
    dim, input_channels = _encoder_input_facts(encoder, dim, input_channels)

    pool = keras.layers.GlobalAveragePooling3D if dim == 3 else keras.layers.GlobalAveragePooling2D
    inputs = keras.Input((None,) * dim + (input_channels,), name="image")
    x = pool(name="pool")(encoder(inputs))
    x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    if head == "softmax":
        units, activation = num_classes, "softmax"
    else:
        units, activation = num_classes - 1, "sigmoid"
    # float32 so probabilities and the loss stay exact under mixed precision.
    outputs = keras.layers.Dense(units, activation=activation, name="probabilities",
                                 dtype="float32")(x)
    model = keras.Model(inputs, outputs, name=name)
    model.encoder_layer = encoder
    return model


def ordinal_targets(grades, num_classes):
    """Cumulative encoding of grades: grade `g` -> `[1]*g + [0]*(num_classes - 1 - g)`.

    Args:
        grades: int array or tensor `(batch,)` (or any shape) of grades in
            `[0, num_classes - 1]`; numpy (checked) or a TensorFlow tensor
            (usable in `tf.data`, not checked).
        num_classes: int >= 2.

    Returns:
        float32 array (numpy in, numpy out) or tensor `(*grades.shape, num_classes - 1)`.

    Raises:
        ConfigError: `num_classes < 2`.
        DataError: a numpy grade outside `[0, num_classes - 1]`.

    Example:

    >>> from ssl3d_keras.downstream.models import ordinal_targets
    >>> ordinal_targets([0, 2], 4).tolist()
    [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]
    """
    _check_num_classes(num_classes)
    if tf.is_tensor(grades):
        thresholds = tf.range(num_classes - 1, dtype=grades.dtype)
        return tf.cast(tf.expand_dims(grades, -1) > thresholds, tf.float32)
    grades = np.asarray(grades)
    if grades.size and (
        not np.all(np.equal(np.mod(grades, 1), 0))
        or grades.min() < 0
        or grades.max() > num_classes - 1
    ):
        raise DataError(
            "grades",
            f"expected integer grades in [0, {num_classes - 1}]. "
            f"Received: values in [{grades.min()}, {grades.max()}]",
        )
    return (grades[..., None] > np.arange(num_classes - 1)).astype("float32")


def decode_ordinal(probabilities):
    """Grades from ordinal-head probabilities: the count of outputs above 0.5.

    Args:
        probabilities: float array or tensor `(..., num_classes - 1)`.

    Returns:
        int32 array (numpy in, numpy out) or tensor `(...)` of grades.

    Example:

    >>> from ssl3d_keras.downstream.models import decode_ordinal
    >>> decode_ordinal([[0.9, 0.7, 0.2], [0.1, 0.0, 0.0]]).tolist()
    [2, 0]
    """
    if tf.is_tensor(probabilities):
        return tf.reduce_sum(tf.cast(probabilities > 0.5, tf.int32), axis=-1)
    return np.sum(np.asarray(probabilities) > 0.5, axis=-1).astype("int32")


def encoder_layer(model):
    """The encoder (skips) layer inside a model of `build_*_model`.

    The builders record it as `model.encoder_layer`; for a model without the
    attribute (e.g. reloaded from a `.keras` file), the first layer that is a
    `PyramidEncoder`, a `SavedModelLayer` or a `*_skips` model is taken.

    Raises:
        ConfigError: no encoder layer can be found.
    """
    layer = getattr(model, "encoder_layer", None)
    if layer is not None:
        return layer
    from ssl3d_keras.export.layer import SavedModelLayer
    from ssl3d_keras.models.pyramid import PyramidEncoder

    for layer in model.layers:
        if isinstance(layer, (PyramidEncoder, SavedModelLayer)) or (
            isinstance(layer, keras.Model) and layer.name.endswith("_skips")
        ):
            return layer
    raise ConfigError(
        "model", f"no encoder layer found in model {model.name!r}. "
        f"Received: layers {[layer.name for layer in model.layers]}",
    )


def encoder_variables(model):
    """Every weight of the encoder part (trainable or not, BatchNorm statistics included).

    Keras `weights`, not `variables`: the random-seed states of Dropout layers
    advance whenever the model trains and are not weights.
    """
    return list(encoder_layer(model).weights)


def decoder_variables(model):
    """Every weight of `model` outside the encoder (the decoder or the classifier head)."""
    encoder_ids = {id(v) for v in encoder_variables(model)}
    return [v for v in model.weights if id(v) not in encoder_ids]


def set_encoder_trainable(model, trainable):
    """Freeze (`False`) or unfreeze (`True`) the encoder part of a `build_*_model` model.

    Frozen means: the encoder's weights leave `model.trainable_weights` (no
    gradient, no optimizer update) and its BatchNormalization layers run in
    inference mode (Keras 3 does this for `trainable = False`; a
    `SavedModelLayer` then runs its `training=False` trace), so the moving
    statistics stay fixed too. Dropout inside a Keras encoder still follows
    `training` (a `SavedModelLayer` turns it off with the rest of training mode).

    A compiled model keeps the variable list it traced: call `model.compile`
    again after this (with a fresh optimizer when unfreezing, as the paper's
    schedule does: an optimizer built for the decoder alone does not know the
    encoder's variables). A custom train step reads `trainable_variables_of`.

    Args:
        model: a model of `build_segmentation_model` or `build_classification_model`.
        trainable: bool.
    """
    encoder_layer(model).trainable = bool(trainable)


def trainable_variables_of(model):
    """The variables a train step should update now: `model.trainable_variables`.

    Reflects the latest `set_encoder_trainable` (the encoder's weights are
    absent while it is frozen).
    """
    return list(model.trainable_variables)

