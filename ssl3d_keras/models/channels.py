"""Change the number of input channels of a pretrained encoder, on purpose.

The old code transferred weights by auto-generated layer names with
`skip_mismatch=True`, silently dropping the first convolution when the channel
counts differed. Here every weight is copied strictly and only the first
convolution kernel is remapped, by a rule you choose and a report states.
"""

import keras
import numpy as np

from ssl3d_keras.config import check_choice, check_int
from ssl3d_keras.errors import ConfigError

MODES = ("mean", "repeat", "zero")

_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _first_conv(model):
    for layer in model.layers:
        if isinstance(layer, _CONVS):
            return layer
        if isinstance(layer, keras.Model):
            return _first_conv(layer)
    raise ConfigError("encoder", f"no convolution layer found in model '{model.name}'")


def _rebuild(encoder, input_channels):
    """The same architecture with `input_channels` input channels (fresh weights)."""
    config = encoder.get_config()
    if "input_channels" in config:
        return type(encoder).from_config({**config, "input_channels": input_channels})
    if len(encoder.inputs) == 1:
        shape = tuple(encoder.inputs[0].shape[1:-1])
        new_input = keras.Input(shape=(*shape, input_channels), name=encoder.inputs[0].name)
        return keras.models.clone_model(encoder, input_tensors=new_input)
    raise ConfigError(
        "encoder",
        "expected a UNetEncoder-like model (config key 'input_channels') or a functional "
        f"model with one input. Received: {type(encoder).__name__} '{encoder.name}'",
    )


def map_first_kernel(kernel, input_channels, mode):
    """Map a kernel `(*k, C, F)` to `(*k, C', F)`.

    - `"mean"`: every new channel gets `sum_c kernel[..., c, :] / C'` (the mean
      over old channels, scaled by `C / C'`), so a constant input that is the
      same in every channel gives exactly the old response.
    - `"repeat"`: new channel `c'` gets old channel `c' mod C`, scaled by
      `C / C'`, so when `C'` is a multiple of `C` the old channels tiled
      `C' / C` times give exactly the old response (as timm adapts inputs).
    - `"zero"`: the first `min(C, C')` channels are copied, the others are
      zero, so the old channels followed by anything give the old response.
    """
    kernel = np.asarray(kernel)
    old = kernel.shape[-2]
    if mode == "mean":
        mean = kernel.sum(axis=-2, keepdims=True) / input_channels
        return np.repeat(mean, input_channels, axis=-2)
    if mode == "repeat":
        index = np.arange(input_channels) % old
        return np.take(kernel, index, axis=-2) * (old / input_channels)
    if mode == "zero":
        new = np.zeros((*kernel.shape[:-2], input_channels, kernel.shape[-1]), kernel.dtype)
        keep = min(old, input_channels)
        new[..., :keep, :] = kernel[..., :keep, :]
        return new
    raise ConfigError("mode", f"expected one of {MODES}. Received: mode={mode!r}")


def _shape_text(shape):
    return "(" + ",".join(str(int(s)) for s in shape) + ")"


def adapt_input_channels(encoder, input_channels, *, mode="mean"):
    """A copy of `encoder` for a different number of input channels.

    The encoder is rebuilt with `input_channels` channels; every weight is
    copied strictly (same structure, same names, same shapes), except the
    kernel of the first convolution, which is mapped by `mode` (see
    `map_first_kernel`).

    Args:
        encoder: a `UNetEncoder` (rebuilt from its config) or a functional
            `keras.Model` with one input (cloned on a new input).
        input_channels: int, the new channel count `C'`.
        mode: `"mean"` (default), `"repeat"` or `"zero"`.

    Returns:
        `(new_encoder, report)`, `report` a one-line summary such as
        `"first conv kernel (3,3,3,2,16) -> (3,3,3,4,16) by mean; 25 other
        weights copied"`.

    Raises:
        ConfigError: unknown mode, bad channel count, or weights that do not
            correspond one to one (the message lists them).

    Example:
    ```python
    brats_encoder, report = adapt_input_channels(ukbb_encoder, 4, mode="mean")
    ```
    """
    check_choice("mode", mode, MODES)
    check_int("input_channels", input_channels)
    new = _rebuild(encoder, input_channels)
    old_kernel = _first_conv(encoder).kernel
    new_kernel = _first_conv(new).kernel
    old_weights, new_weights = encoder.weights, new.weights
    old_paths = [w.path for w in old_weights]
    new_paths = [w.path for w in new_weights]
    if old_paths != new_paths:
        missing = sorted(set(old_paths) ^ set(new_paths)) or ["(same names, different order)"]
        raise ConfigError(
            "encoder",
            f"the rebuilt encoder's weights do not correspond to the original's: {missing}",
        )
    mismatched = [
        f"{old.path} {_shape_text(old.shape)} -> {_shape_text(fresh.shape)}"
        for old, fresh in zip(old_weights, new_weights, strict=True)
        if old.path != old_kernel.path and tuple(old.shape) != tuple(fresh.shape)
    ]
    if mismatched:
        raise ConfigError(
            "encoder",
            "only the first conv kernel may change with the input channels; these weights "
            f"changed shape too: {mismatched}",
        )
    copied = 0
    for old, fresh in zip(old_weights, new_weights, strict=True):
        value = old.numpy()
        if old.path == old_kernel.path:
            fresh.assign(map_first_kernel(value, input_channels, mode))
        else:
            fresh.assign(value)
            copied += 1
    report = (
        f"first conv kernel {_shape_text(old_kernel.shape)} -> {_shape_text(new_kernel.shape)} "
        f"by {mode}; {copied} other weights copied"
    )
    return new, report
