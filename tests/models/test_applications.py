"""DenseNet-121 encoder (`DenseNetEncoder`), the paper's 2D fundus backbone."""

import numpy as np
import pytest

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models import DenseNetEncoder, densenet121_encoder


def test_densenet121_encoder_forward():
    encoder = densenet121_encoder((32, 32, 1))  # weights=None: no download needed
    assert isinstance(encoder, DenseNetEncoder)
    assert (encoder.dim, encoder.input_channels, encoder.min_input_size) == (2, 1, 32)
    # DenseNet-121 without top: 7,037,504 parameters for 3 channels (keras docs: 8.1 M
    # with the 1000-class top = 1024 * 1000 + 1000 more); one channel saves 7*7*2*64.
    assert encoder.count_params() == 7_037_504 - 7 * 7 * 2 * 64
    out = encoder(np.zeros((1, 32, 32, 1), "float32"), training=False)
    assert tuple(out.shape) == (1, 1, 1, 1024)


def test_dynamic_size_pyramid_and_input_checks(rng):
    encoder = DenseNetEncoder(input_channels=2)
    assert tuple(encoder.inputs[0].shape) == (None, None, None, 2)
    x = rng.normal(size=(1, 64, 96, 2)).astype(np.float32)
    outputs = encoder.skips_model()(x, training=False)
    # Strides 2, 4, 8, 16, 32 with the channels of DenseNet-121's stages.
    expected = {"skip_1": 2, "skip_2": 4, "skip_3": 8, "skip_4": 16, "bottleneck": 32,
                "features": 32}
    channels = {"skip_1": 64, "skip_2": 256, "skip_3": 512}
    for name, stride in expected.items():
        assert tuple(outputs[name].shape) == (1, 64 // stride, 96 // stride,
                                              channels.get(name, 1024)), name
    np.testing.assert_allclose(outputs["features"], encoder(x, training=False), atol=1e-6)
    with pytest.raises(ConfigError, match="smaller than 32") as info:
        encoder(np.zeros((1, 16, 64, 2), "float32"))
    assert info.value.key == "input_shape"
    with pytest.raises(ConfigError, match="2 input channel"):
        encoder(np.zeros((1, 32, 32, 3), "float32"))
    with pytest.raises(ConfigError, match="rank 4"):
        encoder(np.zeros((1, 32, 32, 32, 2), "float32"))


def test_densenet121_bad_shape():
    with pytest.raises(ConfigError, match="smaller than 32"):
        densenet121_encoder((16, 16, 3))
    with pytest.raises(ConfigError, match="expected \\(H, W, C\\)"):
        densenet121_encoder((32, 32, 32, 1))
    with pytest.raises(ConfigError, match="DenseNetEncoder.depth"):
        DenseNetEncoder(depth=3)
    with pytest.raises(ConfigError, match="input_channels"):
        DenseNetEncoder(input_channels=0)


@pytest.mark.slow
def test_weights_from_a_file(tmp_path, rng):
    """A weights file of the same network initialises the encoder (as 'imagenet' would)."""
    source = DenseNetEncoder(input_channels=3)
    path = tmp_path / "densenet.weights.h5"
    source.save_weights(str(path))
    loaded = DenseNetEncoder(input_channels=3, weights=str(path))
    x = rng.normal(size=(1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(x, training=False), source(x, training=False), atol=1e-6)
    assert loaded.get_config()["weights"] == str(path)
