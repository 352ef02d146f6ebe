"""adapt_input_channels: strict copy, deliberate first-kernel mapping."""

import keras
import numpy as np
import pytest

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models import UNetEncoder
from ssl3d_keras.models.channels import adapt_input_channels


@pytest.fixture
def encoder(rng):
    enc = UNetEncoder(input_channels=2, depth=1, base_filters=4, norm="batch")
    # Non-trivial weights everywhere, BatchNorm statistics included.
    for w in enc.weights:
        value = rng.normal(size=w.shape).astype("float32")
        w.assign(np.abs(value) + 0.5 if "variance" in w.path else value)
    return enc


def test_mean_mode_preserves_equal_channel_response(encoder, rng):
    new, report = adapt_input_channels(encoder, 4, mode="mean")
    # 4 convs (kernel, bias) + 4 BatchNorms (4 weights each) = 24, minus the first kernel.
    assert report == "first conv kernel (3,3,3,2,4) -> (3,3,3,4,4) by mean; 23 other weights copied"
    assert new.input_channels == 4 and new.get_config()["depth"] == 1
    x = rng.normal(size=(2, 8, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(
        new(np.repeat(x, 4, -1), training=False),
        encoder(np.repeat(x, 2, -1), training=False),
        rtol=1e-4,
        atol=1e-4,
    )
    # Every other weight is an exact copy.
    for old, fresh in zip(encoder.weights[1:], new.weights[1:], strict=True):
        np.testing.assert_array_equal(old.numpy(), fresh.numpy())
    # Down to one channel works too (e.g. a 2-channel MRI encoder on CT).
    single, _ = adapt_input_channels(encoder, 1)
    np.testing.assert_allclose(
        single(x, training=False),
        encoder(np.repeat(x, 2, -1), training=False),
        rtol=1e-4,
        atol=1e-4,
    )


def test_repeat_and_zero_modes(encoder, rng):
    x = rng.normal(size=(1, 8, 8, 8, 2)).astype("float32")
    expected = encoder(x, training=False)
    repeated, report = adapt_input_channels(encoder, 4, mode="repeat")
    assert "by repeat" in report
    np.testing.assert_allclose(
        repeated(np.tile(x, (1, 1, 1, 1, 2))), expected, rtol=1e-4, atol=1e-4
    )
    zero, _ = adapt_input_channels(encoder, 3, mode="zero")
    extra = rng.normal(size=(1, 8, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(zero(np.concatenate([x, extra], -1)), expected, rtol=1e-5, atol=1e-5)
    kernel = zero.get_layer("level1_conv1").kernel.numpy()
    np.testing.assert_array_equal(kernel[..., 2, :], 0)


def test_plain_functional_model_and_strict_mismatch(rng):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    plain = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(x))
    new, report = adapt_input_channels(plain, 1, mode="mean")
    assert report == "first conv kernel (3,3,3,4) -> (3,3,1,4) by mean; 3 other weights copied"
    image = rng.normal(size=(1, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(new(image), plain(np.repeat(image, 3, -1)), rtol=1e-4, atol=1e-5)
    # A later layer that sees the raw input changes shape too: refused, and named.
    skip = keras.layers.Concatenate()([inputs, x])
    dense = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="after_skip")(skip))
    with pytest.raises(ConfigError, match="after_skip/kernel \\(1,1,7,2\\) -> \\(1,1,5,2\\)"):
        adapt_input_channels(dense, 1)


def test_bad_arguments(encoder):
    with pytest.raises(ConfigError, match="mode"):
        adapt_input_channels(encoder, 3, mode="average")
    with pytest.raises(ConfigError, match="input_channels"):
        adapt_input_channels(encoder, 0)
