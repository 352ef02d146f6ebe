"""Every registered encoder architecture passes the shared contract (ssl3d_keras/testing/encoders.py).

Run one with `-k`, e.g. `pytest tests/models/test_encoder_contract.py -k densenet`.
"""

import keras
import numpy as np
import pytest

from ssl3d_keras.models import list_encoders
from ssl3d_keras.testing import encoders as contract

CASES = contract.cases()


def test_every_registered_architecture_is_covered():
    assert sorted({name for name, _ in CASES}) == list_encoders()


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{d}d" for n, d in CASES])
def encoder(request):
    name, dim = request.param
    return contract.build_encoder(name, dim)


def test_output_shapes(encoder):
    contract.check_output_shapes(encoder)


def test_pyramid_outputs(encoder):
    contract.check_pyramid_outputs(encoder)


def test_divisibility(encoder):
    contract.check_divisibility(encoder)


def test_rejects_small_inputs(encoder):
    contract.check_rejects_small_inputs(encoder)


def test_preset_round_trip(encoder, tmp_path):
    contract.check_preset_round_trip(encoder, tmp_path / "preset")


def _layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def test_kernels_are_he_normal(encoder):
    # ReLU networks: He et al. (2015), as the authors' U-Net; Keras would default to Glorot.
    kernels = [layer for layer in _layers(encoder) if hasattr(layer, "kernel_initializer")]
    assert kernels, "no Conv/Dense layer found"
    for layer in kernels:
        initializer = layer.kernel_initializer
        assert isinstance(initializer, keras.initializers.HeNormal), (layer.name, initializer)
        assert not isinstance(initializer, (keras.initializers.GlorotUniform,
                                            keras.initializers.GlorotNormal)), layer.name


def test_kernel_values_have_he_variance(encoder):
    # The drawn values, not just the attribute: variance 2 / fan_in (truncated normal:
    # keras' HeNormal rescales so the variance is exact).
    for layer in _layers(encoder):
        if getattr(layer, "kernel", None) is None or np.prod(layer.kernel.shape) < 2000:
            continue
        kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
        fan_in = np.prod(kernel.shape[:-1])
        np.testing.assert_allclose(kernel.var(), 2.0 / fan_in, rtol=0.15, err_msg=layer.name)
