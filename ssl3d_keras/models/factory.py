"""Build an encoder from a config table: `{"architecture": ..., <its arguments>}`.

The `encoder` table of a `PretrainConfig` (and the `encoder` argument of every
task) goes through `build_encoder`. Its `architecture` key picks the network
("unet" when absent, the paper's 3D and 2D-slice encoder; "densenet121", the
paper's 2D fundus encoder); the other keys are that network's arguments. The
channel count and the number of spatial dimensions come from the data.

Example:

>>> from ssl3d_keras.models.factory import build_encoder
>>> unet = build_encoder({"depth": 2, "base_filters": 4}, input_channels=1, dim=3)
>>> densenet = build_encoder({"architecture": "densenet121"}, input_channels=3, dim=2)
"""

import inspect

from ssl3d_keras.config import closest
from ssl3d_keras.errors import ConfigError

__all__ = ["architecture_arguments", "build_encoder", "get_encoder", "list_architectures",
           "list_encoders"]

DEFAULT_ARCHITECTURE = "unet"

# Arguments the run sets from its data, never from the encoder table.
_FROM_DATA = ("input_channels", "dim")


def _architectures():
    from ssl3d_keras.models.applications import DenseNetEncoder
    from ssl3d_keras.models.unet import UNetEncoder

    # name -> (class, the spatial dimensions it supports)
    return {"unet": (UNetEncoder, (2, 3)), "densenet121": (DenseNetEncoder, (2,))}


def list_encoders():
    """Sorted names of the encoder architectures (the `encoder.architecture` key)."""
    return sorted(_architectures())


# The name this had before the registries shared one verb pair.
list_architectures = list_encoders


def architecture_arguments(architecture):
    """The keys an `architecture`'s table may set (its constructor arguments, minus data facts).

    Raises:
        ConfigError: an unknown architecture (with the closest name).
    """
    cls, _ = _lookup(architecture)
    parameters = inspect.signature(cls.__init__).parameters
    named = [p for p in parameters if p not in ("self", "kwargs", *_FROM_DATA)]
    return sorted([*named, "trainable", "dtype"])


def _lookup(architecture):
    architectures = _architectures()
    if architecture not in architectures:
        raise ConfigError(
            "encoder.architecture",
            f"unknown architecture {architecture!r}{closest(architecture, architectures)}; "
            f"choose from {sorted(architectures)}. Received: architecture={architecture!r}",
        )
    return architectures[architecture]


def get_encoder(spec, *, input_channels, dim):
    """The encoder described by `spec`, for `input_channels` channels and `dim` spatial axes.

    Args:
        spec: dict, the `encoder` table: `architecture` (`"unet"`, the default,
            or `"densenet121"`) and that architecture's arguments
            (`UNetEncoder`: depth, base_filters, ...; `DenseNetEncoder`:
            weights, input_size, name). `{}` is the paper's U-Net encoder.
        input_channels: int, channels `C` of the data.
        dim: int, 2 or 3 spatial dimensions of the data.

    Returns:
        A `keras.Model` (`UNetEncoder` or `DenseNetEncoder`) mapping
        `(batch, *spatial, C)` to features, with `pyramid_outputs`,
        `skips_model()`, `min_input_size`, `dim` and `input_channels`.

    Raises:
        ConfigError: an unknown architecture or key (with the closest name), a
            key the data decides (`input_channels`, `dim`) set to another
            value, an architecture that does not support `dim`, or an invalid
            argument value.
    """
    if not isinstance(spec, dict):
        raise ConfigError("encoder", f"expected a table of encoder arguments. Received: {spec!r}")
    arguments = dict(spec)
    architecture = arguments.pop("architecture", DEFAULT_ARCHITECTURE)
    cls, dims = _lookup(architecture)
    if dim not in dims:
        raise ConfigError(
            "encoder.architecture",
            f"{architecture!r} is a {' or '.join(f'{d}D' for d in dims)} encoder and the data "
            f"is {dim}D; use architecture 'unet' or data.dim={dims[0]}. "
            f"Received: architecture={architecture!r}, dim={dim}",
        )
    for key, value in (("input_channels", input_channels), ("dim", dim)):
        if key in arguments and arguments.pop(key) != value:
            raise ConfigError(
                f"encoder.{key}",
                f"is set by the data ({key}={value}), not in the encoder table. "
                f"Received: {key}={spec[key]!r}",
            )
    allowed = architecture_arguments(architecture)
    unknown = sorted(set(arguments) - set(allowed))
    if unknown:
        key = unknown[0]
        hint = ""
        if architecture != DEFAULT_ARCHITECTURE:
            hint = ("; to replace the whole U-Net table, override the table itself: "
                    f"encoder={{architecture=\"{architecture}\"}}")
        raise ConfigError(
            f"encoder.{key}",
            f"unknown key for architecture {architecture!r}{closest(key, allowed)}; "
            f"its keys are {allowed}{hint}. Received: {unknown}",
        )
    if "dim" in inspect.signature(cls.__init__).parameters:
        arguments["dim"] = dim
    return cls(input_channels=input_channels, **arguments)


# The name this had before the registries shared one verb pair.
build_encoder = get_encoder
