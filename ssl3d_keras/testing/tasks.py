"""Contract checks every proxy task must pass, whatever it predicts.

Each `check_*` takes a built task (or a task name and rank) and raises an
AssertionError naming what broke. `tests/tasks/test_contract.py` runs them for
every name in `ssl3d_keras.tasks.list_tasks()`, in 3D and in 2D, so a new task
is covered the moment it is registered. A user who writes a sixth task runs
the same checks on it:

>>> from ssl3d_keras.testing import tasks as contract
>>> task = contract.build_task("rotation", 2).build_from_example()
>>> volume = contract.make_volume(2)
>>> contract.check_transform_shapes(task, volume)
>>> contract.check_all_weights_get_gradients(task, contract.make_batch(task, volume))

Tasks are built tiny: a one-level encoder with 4 filters, 32-voxel sides, and
the small arguments of `SMALL_ARGS` that the task's constructor accepts.
"""

import inspect
import json

import keras
import numpy as np
import tensorflow as tf

from ssl3d_keras import tasks
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models.dtype import dtype_policy

TINY_ENCODER = {"depth": 1, "base_filters": 4, "dropout": 0.0, "norm": "batch"}
SIDE = 32
CHANNELS = 2
# Small values of common task arguments; a task gets those its constructor takes.
SMALL_ARGS = {"head_units": (16,), "num_permutations": 8}
DIMS = (3, 2)


def volume_shape(dim):
    return (SIDE,) * dim + (CHANNELS,)


def build_task(name, dim, **overrides):
    """The task `name` with a tiny encoder on `(32,)*dim + (2,)` volumes."""
    cls = tasks.get_class(name)
    params = inspect.signature(cls.__init__).parameters
    args = {key: value for key, value in SMALL_ARGS.items() if key in params}
    args.update(overrides)
    return tasks.get(name, input_shape=volume_shape(dim), encoder=dict(TINY_ENCODER), **args)


def make_volume(dim, seed=0):
    """A float32 volume with structure on every scale (smooth ramp plus noise)."""
    rng = np.random.default_rng(seed)
    shape = volume_shape(dim)
    ramp = np.indices(shape[:-1]).sum(axis=0)[..., None] / SIDE
    return (ramp + rng.normal(size=shape)).astype(np.float32)


def seed_of(i):
    return tf.constant([i, 17], tf.int32)


def example(task, volume, i, training=True):
    return task.transform(tf.constant(volume), seed_of(i), training=training)


def make_batch(task, volume, n=2, training=True):
    pairs = [example(task, volume, i, training) for i in range(n)]
    inputs = tf.nest.map_structure(lambda *x: tf.stack(x), *[p[0] for p in pairs])
    target = tf.nest.map_structure(lambda *x: tf.stack(x), *[p[1] for p in pairs])
    return inputs, target


def _numpy(structure):
    return [np.asarray(x) for x in tf.nest.flatten(structure)]


def _equal(a, b, exact=True):
    """Same structure, shapes, dtypes and values; `exact=False` allows float round-off.

    Graph mode may fuse or reorder float ops (Grappler), so a traced transform
    can differ from eager execution in the last bit.
    """
    a, b = _numpy(a), _numpy(b)

    def same(x, y):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if exact or not np.issubdtype(x.dtype, np.floating):
            return np.array_equal(x, y)
        return np.allclose(x, y, rtol=1e-5, atol=1e-5)

    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))


def check_transform_shapes(task, volume):
    """Inputs: float32, static shape, channels last, finite; target: static shape."""
    for training in (True, False):
        inputs, target = example(task, volume, 3, training)
        for x in tf.nest.flatten(inputs):
            assert x.dtype == tf.float32, f"inputs dtype {x.dtype}, expected float32"
            assert x.shape.is_fully_defined(), f"inputs shape {x.shape} not static"
            assert x.shape[-1] == task.channels, f"inputs shape {x.shape}: channels last"
            assert x.shape.rank >= task.dim + 1, f"inputs shape {x.shape} lost spatial axes"
            assert np.isfinite(x.numpy()).all(), "inputs not finite"
        for y in tf.nest.flatten(target):
            assert y.shape.is_fully_defined(), f"target shape {y.shape} not static"
            assert y.dtype in (tf.int32, tf.float32), f"target dtype {y.dtype}"


def check_same_seed_same_example(task, volume):
    for training in (True, False):
        first = example(task, volume, 5, training)
        again = example(task, volume, 5, training)
        assert _equal(first, again), f"same seed gave different examples (training={training})"


def check_different_seeds_differ(task, volume):
    examples = [example(task, volume, i, training=True) for i in range(8)]
    assert not all(_equal(examples[0], other) for other in examples[1:]), (
        "8 different seeds all gave the same example"
    )


def check_graph_safe(task, volume):
    """The transform traces once in a tf.function and runs in a tf.data map, unchanged."""
    volume = tf.constant(volume)
    for training in (True, False):
        traced = tf.function(
            lambda v, s, training=training: task.transform(v, s, training=training),
            input_signature=[
                tf.TensorSpec(volume.shape, tf.float32),
                tf.TensorSpec([2], tf.int32),
            ],
        )
        for i in (0, 1, 2):
            eager = task.transform(volume, seed_of(i), training=training)
            assert _equal(traced(volume, seed_of(i)), eager, exact=False), (
                f"tf.function result differs from eager (training={training})"
            )
        assert traced.experimental_get_tracing_count() == 1, "transform retraced per seed"

    data = tf.data.Dataset.range(4).map(
        lambda i: task.transform(volume, tf.stack([tf.cast(i, tf.int32), 17]), training=True)
    )
    for i, mapped in enumerate(data.batch(4).take(1).unbatch()):
        eager = task.transform(volume, seed_of(i), training=True)
        assert _equal(mapped, eager, exact=False), (
            "tf.data map result differs from eager"
        )


def check_forward_and_loss(task, batch):
    inputs, target = batch
    for training in (True, False):
        outputs = task(inputs, training=training)
        for x in tf.nest.flatten(outputs):
            assert np.isfinite(np.asarray(x)).all(), "outputs not finite"
        loss, metrics = task.compute_loss_and_metrics(inputs, target, training=training)
        assert loss.dtype == tf.float32 and loss.shape == (), f"loss {loss.dtype} {loss.shape}"
        assert np.isfinite(loss.numpy()), f"loss not finite: {loss.numpy()}"
        accuracy = float(metrics["accuracy"])
        assert 0.0 <= accuracy <= 1.0, f"accuracy {accuracy} outside [0, 1]"
    assert 0.0 < task.chance_accuracy < 1.0, f"chance_accuracy {task.chance_accuracy}"


def check_all_weights_get_gradients(task, batch):
    inputs, target = batch
    with tf.GradientTape() as tape:
        loss, _ = task.compute_loss_and_metrics(inputs, target, training=True)
    variables = task.trainable_variables
    assert variables, "the task has no trainable weights"
    gradients = tape.gradient(loss, variables)
    missing = [v.path for v, g in zip(variables, gradients, strict=True) if g is None]
    assert not missing, f"no gradient reaches {missing}"
    for v, g in zip(variables, gradients, strict=True):
        assert np.isfinite(np.asarray(g)).all(), f"gradient of {v.path} not finite"


def check_config_round_trip(task, volume, batch):
    """`get_config` mirrors the constructor, is JSON, and rebuilds the same task."""
    config = task.get_config()
    params = inspect.signature(type(task).__init__).parameters
    constructor = {k for k, p in params.items() if k != "self" and p.kind != p.VAR_KEYWORD}
    assert set(config) == constructor | {"name", "trainable"}, (
        f"get_config keys {sorted(config)} do not mirror the constructor {sorted(constructor)}"
    )
    clone = type(task).from_config(json.loads(json.dumps(config)))
    assert clone.get_config() == config
    assert _equal(example(clone, volume, 4), example(task, volume, 4)), (
        "the rebuilt task makes different examples"
    )
    clone.build_from_example()
    clone.set_weights(task.get_weights())
    outputs = clone(batch[0], training=False), task(batch[0], training=False)
    assert _equal(*outputs, exact=False), (
        "the rebuilt task with the same weights gives different outputs"
    )
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(task))
    assert type(revived) is type(task)


def check_unknown_key_raises(name, dim):
    try:
        build_task(name, dim, bogus_option=1)
    except ConfigError as e:
        assert "bogus_option" in str(e), f"ConfigError does not name the key: {e}"
    else:
        raise AssertionError("an unknown constructor key was accepted silently")


def check_mixed_precision(name, dim, volume):
    """Under mixed_bfloat16 the outputs and the loss stay float32 and finite."""
    with dtype_policy("mixed_bfloat16"):
        task = build_task(name, dim)
        inputs, target = make_batch(task, volume)
        outputs = task(inputs, training=False)
        for x in tf.nest.flatten(outputs):
            if x.dtype.is_floating:
                assert x.dtype == tf.float32, f"outputs are {x.dtype} under mixed precision"
        loss, _ = task.compute_loss_and_metrics(inputs, target, training=True)
        assert loss.dtype == tf.float32 and np.isfinite(loss.numpy())
