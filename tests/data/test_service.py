"""The input pipeline on tf.data service workers on 127.0.0.1."""

import functools

import numpy as np
import pytest
import tensorflow as tf

import ssl3d_keras
from ssl3d_keras.benchmark.pipeline import _write_shards
from ssl3d_keras.data import service
from ssl3d_keras.data.pipeline import make_pipeline
from ssl3d_keras.data.volumes import open_volumes
from ssl3d_keras.errors import ConfigError


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("service") / "shards"
    _write_shards(str(folder), 6, 40, 1, 0)
    return str(folder)


@pytest.fixture(scope="module")
def dispatcher():
    server = service.start_dispatcher()
    yield server
    server.stop()


def _pipeline(shards):
    task = ssl3d_keras.tasks.get("rotation", input_shape=(32, 32, 32, 1),
                                 encoder={"depth": 1, "base_filters": 1, "final_pool": False})
    return make_pipeline(open_volumes(shards), functools.partial(task.transform, training=True),
                         batch_size=2, crop_size=32, seed=3)


def _examples(dataset, batches):
    """(target, image checksum) of every example of the first `batches` batches."""
    out = []
    for inputs, target in dataset.take(batches):
        sums = tf.reduce_sum(tf.reshape(inputs, (inputs.shape[0], -1)) * 1000.0, axis=1)
        out += list(zip(target.numpy().tolist(), np.round(sums.numpy(), 2).tolist(), strict=True))
    return out


@pytest.mark.parametrize("sharding", ["dynamic", "off"])
def test_one_worker_serves_exactly_the_local_stream(shards, dispatcher, sharding):
    worker = service.start_worker(service.dispatcher_address(dispatcher))
    try:
        local = _examples(_pipeline(shards), 8)
        served = _examples(service.distribute(_pipeline(shards),
                                              service.dispatcher_address(dispatcher),
                                              job_name=f"one-{sharding}", sharding=sharding), 8)
    finally:
        worker.stop()
    assert served == local


def test_two_workers_make_each_example_once_from_the_local_seeds(shards):
    dispatcher = service.start_dispatcher()
    address = service.dispatcher_address(dispatcher)
    workers = [service.start_worker(address) for _ in range(2)]
    try:
        # Four epochs of 6 volumes = 12 batches of 2; the workers take epochs in turn.
        served = _examples(service.distribute(_pipeline(shards), address, job_name="two"), 12)
        local = _examples(_pipeline(shards), 30)
    finally:
        for worker in workers:
            worker.stop()
        dispatcher.stop()
    assert len(set(served)) == len(served)  # nothing made twice
    assert set(served) <= set(local)        # every example is one the local pipeline makes


@pytest.mark.parametrize("address", ["localhost", "10.0.0.5:port", "", None, 5050])
def test_bad_addresses_name_the_key(address):
    with pytest.raises(ConfigError, match="data.service"):
        service.check_address(address)


def test_addresses_get_the_grpc_scheme():
    assert service.check_address("10.0.0.5:5050") == "grpc://10.0.0.5:5050"
    assert service.check_address("grpc://host:1") == "grpc://host:1"


def test_unknown_sharding_is_refused(shards):
    with pytest.raises(ConfigError, match="sharding"):
        service.distribute(_pipeline(shards), "localhost:1", job_name="x", sharding="files")


def test_pretraining_through_the_service_equals_pretraining_here(shards, dispatcher, tmp_path):
    from ssl3d_keras.training import load_run, pretrain

    config = {"task": "rotation", "steps": 3, "batch_size": 2, "log_every": 1,
              "encoder": {"depth": 1, "base_filters": 2, "dropout": 0.0},
              "data": {"path": shards, "input_size": 32}}
    worker = service.start_worker(service.dispatcher_address(dispatcher))
    try:
        served = pretrain({**config, "data": {**config["data"],
                                              "service": service.dispatcher_address(dispatcher)}},
                          tmp_path / "served", verbose=False)
    finally:
        worker.stop()
    pretrain(config, tmp_path / "here", verbose=False)
    assert served["steps"] == 3
    for a, b in zip(load_run(tmp_path / "served")[0].weights, load_run(tmp_path / "here")[0].weights,
                    strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("data, match", [
    ({"service": "localhost:5050"}, "needs a dataset on disk"),
    ({"service": "no-port", "path": "x"}, "HOST:PORT"),
    ({"service_sharding": "files"}, "service_sharding"),
])
def test_service_settings_are_checked_with_the_config(data, match):
    from ssl3d_keras.config import from_dict
    from ssl3d_keras.training.config import PretrainConfig, validate

    with pytest.raises(ConfigError, match=match):
        validate(from_dict(PretrainConfig, {"data": data}))
