"""Every registered task, in 3D and 2D, passes the shared contract (ssl3d_keras/testing/tasks.py).

Run one task with `-k`, e.g. `pytest tests/tasks/test_contract.py -k rotation`.
"""

import pytest

from ssl3d_keras.tasks import list_tasks
from ssl3d_keras.testing import tasks as contract

CASES = [(name, dim) for name in list_tasks() for dim in contract.DIMS]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{d}d" for n, d in CASES])
def case(request):
    name, dim = request.param
    task = contract.build_task(name, dim).build_from_example()
    volume = contract.make_volume(dim)
    return name, dim, task, volume, contract.make_batch(task, volume)


def test_transform_shapes_and_dtypes(case):
    _, _, task, volume, _ = case
    contract.check_transform_shapes(task, volume)


def test_same_seed_gives_the_same_example(case):
    _, _, task, volume, _ = case
    contract.check_same_seed_same_example(task, volume)


def test_different_seeds_give_different_examples(case):
    _, _, task, volume, _ = case
    contract.check_different_seeds_differ(task, volume)


def test_transform_is_graph_safe(case):
    _, _, task, volume, _ = case
    contract.check_graph_safe(task, volume)


def test_forward_pass_and_loss_are_finite(case):
    _, _, task, _, batch = case
    contract.check_forward_and_loss(task, batch)


def test_every_trainable_weight_gets_a_gradient(case):
    _, _, task, _, batch = case
    contract.check_all_weights_get_gradients(task, batch)


def test_config_round_trip(case):
    _, _, task, volume, batch = case
    contract.check_config_round_trip(task, volume, batch)


def test_unknown_constructor_key_is_a_config_error(case):
    name, dim, *_ = case
    contract.check_unknown_key_raises(name, dim)


def test_mixed_precision_outputs_stay_float32(case):
    name, dim, _, volume, _ = case
    contract.check_mixed_precision(name, dim, volume)
