"""The input pipeline on tf.data service workers, when preprocessing is the bottleneck.

Jigsaw cuts 27 patches per example, CPC 64 or more, and exemplar augments
whole volumes: on a machine whose cores cannot keep up, the same pipeline can
run on other machines' CPUs. TensorFlow's own service does it
(`tf.data.experimental.service`): one dispatcher, any number of workers, and
the training process reading batches from them over gRPC.

- `start_dispatcher` / `start_worker` start the servers (`ssl3d data-service
  dispatcher|worker` runs them as long-lived processes).
- `distribute` sends a pipeline to the service. The default sharding,
  `"dynamic"`, hands each worker whole epochs of the pipeline's epoch stream in
  turn, so every example is made once, from the same seed as in the local
  pipeline: one worker yields exactly the local stream; several yield the same
  examples, interleaved in the order the workers finish them. `"off"` lets
  every worker run the whole pipeline (each example once per worker).

The workers run the pipeline's graph, so they must read the same files
(prepared shards on a shared file system) and cannot run Python code: the
phantom generator, which calls numpy, runs only in-process.

Example:

>>> import tensorflow as tf
>>> dispatcher = start_dispatcher()
>>> worker = start_worker(dispatcher_address(dispatcher))
>>> batches = distribute(tf.data.Dataset.range(6).batch(2), dispatcher_address(dispatcher),
...                      job_name="doc")
>>> [b.numpy().tolist() for b in batches]
[[0, 1], [2, 3], [4, 5]]
"""

import re

from ssl3d_keras.errors import ConfigError

# TensorFlow is imported where a server or a dataset is made, so that config
# validation can check an address without it.
SHARDING = ("dynamic", "off")

_ADDRESS = re.compile(r"^(grpc://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


def check_address(address, key="data.service"):
    """`HOST:PORT` (or `grpc://HOST:PORT`) of a dispatcher; returns it with the scheme.

    Raises:
        ConfigError: the address is not `HOST:PORT`.
    """
    if not isinstance(address, str) or not _ADDRESS.match(address.strip()):
        raise ConfigError(key, "expected the dispatcher's HOST:PORT, e.g. 10.0.0.5:5050 "
                          f"(`ssl3d data-service dispatcher` prints it). Received: {address!r}")
    address = address.strip()
    return address if address.startswith("grpc://") else f"grpc://{address}"


def start_dispatcher(port=0, *, work_dir=None):
    """Start a dispatcher in this process.

    Args:
        port: TCP port, 0 for a free one.
        work_dir: folder where the dispatcher journals its state, so a restarted
            dispatcher resumes its jobs (fault tolerant mode), or None.

    Returns:
        a started `tf.data.experimental.service.DispatchServer`.
    """
    import tensorflow as tf

    config = tf.data.experimental.service.DispatcherConfig(
        port=int(port), work_dir=work_dir, fault_tolerant_mode=work_dir is not None)
    return tf.data.experimental.service.DispatchServer(config)


def dispatcher_address(server):
    """`HOST:PORT` of a dispatcher started here (its target without the scheme)."""
    return server.target.split("://", 1)[-1]


def start_worker(dispatcher, port=0, *, worker_address=None):
    """Start a worker in this process, registered with `dispatcher` (`HOST:PORT`).

    Args:
        dispatcher: the dispatcher's address.
        port: TCP port of this worker, 0 for a free one.
        worker_address: the `HOST:%port%` the dispatcher tells clients to use
            (default `localhost`: set this host's name when clients run elsewhere).

    Returns:
        a started `tf.data.experimental.service.WorkerServer`.
    """
    import tensorflow as tf

    address = check_address(dispatcher, "dispatcher").split("://", 1)[-1]
    kwargs = {} if worker_address is None else {"worker_address": worker_address}
    config = tf.data.experimental.service.WorkerConfig(dispatcher_address=address,
                                                       port=int(port), **kwargs)
    return tf.data.experimental.service.WorkerServer(config)


def distribute(dataset, address, *, job_name, sharding="dynamic"):
    """Run `dataset` on the service at `address` and read its elements from there.

    Args:
        dataset: a `tf.data.Dataset` whose graph a worker can run (no Python code).
        address: the dispatcher's `HOST:PORT`.
        job_name: consumers with the same job name share one stream (each
            element goes to one of them): give every training worker of one run
            the same name.
        sharding: `"dynamic"` (each element made once across the workers) or
            `"off"` (each worker runs the whole dataset).

    Returns:
        the `tf.data.Dataset` read from the service.

    Raises:
        ConfigError: a bad address or sharding name.
    """
    import tensorflow as tf

    check_sharding(sharding)
    policy = tf.data.experimental.service.ShardingPolicy
    mode = policy.DYNAMIC if sharding == "dynamic" else policy.OFF
    return dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=mode, service=check_address(address), job_name=job_name))


def check_sharding(sharding, key="data.service_sharding"):
    """Raise a `ConfigError` unless `sharding` is one of `SHARDING`."""
    if sharding not in SHARDING:
        raise ConfigError(key, f"must be one of {list(SHARDING)}. Received: {sharding!r}")
