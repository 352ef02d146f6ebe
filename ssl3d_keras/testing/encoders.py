"""Contract checks every registered encoder architecture must pass.

Each `check_*` takes a built encoder and raises an AssertionError naming what
broke. `tests/models/test_encoder_contract.py` runs them for every name in
`ssl3d_keras.models.list_encoders()`, in every dimension the architecture
supports, so a new encoder is covered the moment it is registered; run them on
your own encoder the same way.

Example:

>>> from ssl3d_keras.testing import encoders as contract
>>> encoder = contract.build_encoder("unet", 3)
>>> contract.check_pyramid_outputs(encoder)
"""

import numpy as np

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models.factory import _architectures, get_encoder

__all__ = ["CHANNELS", "SMALL_ARGS", "build_encoder", "cases", "check_divisibility",
           "check_output_shapes", "check_preset_round_trip", "check_pyramid_outputs",
           "check_rejects_small_inputs", "input_size"]

CHANNELS = 2
# Small arguments per architecture (a tiny U-Net; DenseNet-121 has no size knob).
SMALL_ARGS = {"unet": {"depth": 2, "base_filters": 2, "dropout": 0.0, "norm": "batch"}}


def cases():
    """`[(architecture, dim)]` for every registered architecture and dimension it supports."""
    return [(name, dim) for name, (_, dims) in sorted(_architectures().items()) for dim in dims]


def build_encoder(architecture, dim, **overrides):
    """A small encoder of `architecture` for `dim` spatial axes and 2 channels."""
    spec = {"architecture": architecture, **SMALL_ARGS.get(architecture, {}), **overrides}
    return get_encoder(spec, input_channels=CHANNELS, dim=dim)


def input_size(encoder, multiple=1):
    """The smallest spatial size the encoder accepts that is divisible as it asks, times `multiple`."""
    step = int(encoder.divisible_by)
    size = -(-int(encoder.min_input_size) // step) * step
    return size * multiple


def _run(model, size, dim, batch=2, seed=0):
    x = np.random.default_rng(seed).normal(size=(batch, *(size,) * dim, CHANNELS))
    return model(x.astype("float32"), training=False)


def check_output_shapes(encoder):
    """The features keep the batch, shrink every spatial axis alike, and are finite."""
    size = input_size(encoder, 2)
    features = np.asarray(_run(encoder, size, encoder.dim))
    assert features.shape[0] == 2, f"batch lost: {features.shape}"
    assert features.ndim == encoder.dim + 2, f"rank {features.ndim} for dim={encoder.dim}"
    spatial = features.shape[1:-1]
    assert len(set(spatial)) == 1 and size % spatial[0] == 0, (
        f"features {features.shape} from a {size}-voxel input")
    assert np.isfinite(features).all(), "non-finite features"


def check_pyramid_outputs(encoder):
    """`skips_model()` gives every pyramid output plus `features`, finest first, each a
    whole power-of-two stride of the input."""
    size = input_size(encoder, 2)
    outputs = _run(encoder.skips_model(), size, encoder.dim)
    names = list(encoder.pyramid_outputs)
    assert set(outputs) == {*names, "features"}, f"skips_model outputs {sorted(outputs)}"
    strides = []
    for name in names:
        spatial = tuple(outputs[name].shape[1:-1])
        assert len(set(spatial)) == 1 and size % spatial[0] == 0, f"{name}: {spatial} of {size}"
        stride = size // spatial[0]
        assert stride & (stride - 1) == 0, f"{name}: stride {stride} is not a power of two"
        strides.append(stride)
    assert strides == sorted(strides), f"pyramid outputs are not finest first: {strides}"
    np.testing.assert_allclose(np.asarray(outputs["features"]),
                               np.asarray(_run(encoder, size, encoder.dim)), atol=1e-5)


def check_divisibility(encoder):
    """Every input size divisible by `divisible_by` gives pyramid outputs at exact strides."""
    step = int(encoder.divisible_by)
    assert step >= 1 and step & (step - 1) == 0, f"divisible_by={step} is not a power of two"
    for multiple in (1, 3):
        size = input_size(encoder, multiple)
        outputs = _run(encoder.skips_model(), size, encoder.dim, batch=1)
        for name in encoder.pyramid_outputs:
            spatial = outputs[name].shape[1]
            assert spatial * (size // spatial) == size, f"{name}: {spatial} does not tile {size}"


def check_rejects_small_inputs(encoder):
    """An input below `min_input_size` is a one-line ConfigError, not a Keras traceback."""
    small = int(encoder.min_input_size) - 1
    if small < 1:
        return
    try:
        _run(encoder, small, encoder.dim, batch=1)
    except ConfigError as e:
        assert "smaller than" in str(e), str(e)
    else:
        raise AssertionError(f"a {small}-voxel input was accepted (min {encoder.min_input_size})")


def check_preset_round_trip(encoder, folder):
    """The preset written to `folder` loads as the same class with the same outputs."""
    from ssl3d_keras.export.preset import load_preset, save_preset

    save_preset(encoder, folder)
    loaded, meta = load_preset(folder)
    assert type(loaded) is type(encoder), f"loaded {type(loaded).__name__}"
    assert meta["input"]["divisible_by"] == encoder.divisible_by
    assert meta["input"]["min_input_size"] == encoder.min_input_size
    size = input_size(encoder)
    np.testing.assert_allclose(np.asarray(_run(loaded, size, encoder.dim)),
                               np.asarray(_run(encoder, size, encoder.dim)), atol=1e-5)
