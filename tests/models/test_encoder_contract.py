"""Every registered encoder architecture passes the shared contract (ssl3d_keras/testing/encoders.py).

Run one with `-k`, e.g. `pytest tests/models/test_encoder_contract.py -k densenet`.
"""

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
