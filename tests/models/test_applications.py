"""DenseNet-121 encoder wrapper."""

import numpy as np
import pytest

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models.applications import densenet121_encoder


def test_densenet121_encoder_forward():
    encoder = densenet121_encoder((32, 32, 1))  # weights=None: no download needed
    assert (encoder.dim, encoder.input_channels, encoder.min_input_size) == (2, 1, 32)
    # DenseNet-121 without top: 7,037,504 parameters for 3 channels (keras docs: 8.1 M
    # with the 1000-class top = 1024 * 1000 + 1000 more); one channel saves 7*7*2*64.
    assert encoder.count_params() == 7_037_504 - 7 * 7 * 2 * 64
    out = encoder(np.zeros((1, 32, 32, 1), "float32"), training=False)
    assert tuple(out.shape) == (1, 1, 1, 1024)


def test_densenet121_bad_shape():
    with pytest.raises(ConfigError, match="smaller than 32"):
        densenet121_encoder((16, 16, 3))
    with pytest.raises(ConfigError, match="expected \\(H, W, C\\)"):
        densenet121_encoder((32, 32, 32, 1))
