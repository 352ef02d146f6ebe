"""Rotation prediction: the examples are exactly the documented np.rot90 rotations."""

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras import tasks
from ssl3d_keras.errors import ConfigError

TINY = {"depth": 1, "base_filters": 4, "dropout": 0.0, "norm": "batch"}


def paper_rotations(v):
    """The paper's classes, written out from the paper (README) with np.rot90 (not the code's table)."""
    if v.ndim == 3:  # 2D image (H, W, C)
        return [np.rot90(v, k, axes=(0, 1)) for k in range(4)]
    out = [v]
    for plane in ((1, 2), (0, 2), (0, 1)):  # about axis 0, then axis 1, then axis 2
        out += [np.rot90(v, k, axes=plane) for k in (1, 2, 3)]
    return out


def cube_group(v):
    """All distinct compositions of 90-degree turns of a 3D volume: the cube's 24 rotations."""
    found = {}
    frontier = [v]
    while frontier:
        nxt = []
        for x in frontier:
            for plane in ((1, 2), (0, 2), (0, 1)):
                y = np.rot90(x, 1, axes=plane)
                if y.tobytes() not in found:
                    found[y.tobytes()] = y
                    nxt.append(y)
        frontier = nxt
    return list(found.values())


def examples(task, volume, n):
    """Transform `volume` with seeds (i, 3) for i < n, in one tf.data pass."""
    v = tf.constant(volume)
    data = tf.data.Dataset.range(n).map(
        lambda i: task.transform(v, tf.stack([tf.cast(i, tf.int32), 3]))
    )
    inputs, labels = next(iter(data.batch(n)))
    return inputs.numpy(), labels.numpy()


def index_of(x, candidates):
    hits = [i for i, c in enumerate(candidates) if c.shape == x.shape and np.array_equal(c, x)]
    assert len(hits) == 1, f"output matches {len(hits)} reference rotations"
    return hits[0]


@pytest.mark.parametrize("dim", [3, 2])
def test_each_label_is_its_documented_rotation(dim, rng):
    shape = (6,) * dim + (2,)
    volume = rng.normal(size=shape).astype(np.float32)
    task = tasks.get("rotation", input_shape=shape, encoder=TINY, head_units=(8,))
    reference = paper_rotations(volume)
    assert len({r.tobytes() for r in reference}) == len(reference) == (10 if dim == 3 else 4)
    inputs, labels = examples(task, volume, 300)
    assert labels.dtype == np.int32
    for x, label in zip(inputs, labels, strict=True):
        assert index_of(x, reference) == label
    assert sorted(set(labels.tolist())) == list(range(len(reference)))


def test_labels_are_uniform(rng):
    shape = (4, 4, 4, 1)
    task = tasks.get("rotation", input_shape=shape, encoder={"depth": 1, "final_pool": False})
    _, labels = examples(task, rng.normal(size=shape).astype(np.float32), 2000)
    counts = np.bincount(labels, minlength=10)
    # Binomial(2000, 0.1): mean 200, sd 13.4; 4.5 sd either side.
    assert counts.min() > 140 and counts.max() < 260, counts


def test_cube24_is_the_whole_rotation_group(rng):
    shape = (5, 5, 5, 1)
    volume = rng.normal(size=shape).astype(np.float32)
    task = tasks.get("rotation", input_shape=shape, rotations="cube24",
                     encoder={"depth": 1, "final_pool": False}, head_units=(8,))
    group = cube_group(volume)
    assert len(group) == 24 == task.num_classes
    inputs, labels = examples(task, volume, 600)
    seen = {}
    for x, label in zip(inputs, labels, strict=True):
        seen.setdefault(int(label), set()).add(index_of(x, group))
    assert sorted(seen) == list(range(24))
    assert all(len(s) == 1 for s in seen.values()), "one label means two rotations"
    assert len({next(iter(s)) for s in seen.values()}) == 24, "two labels mean one rotation"


def test_class_names_and_chance():
    task = tasks.get("rotation", input_shape=(8, 8, 8, 1), encoder=TINY)
    assert task.num_classes == 10 and task.chance_accuracy == pytest.approx(0.1)
    names = [task.class_name(i) for i in range(10)]
    assert len(set(names)) == 10
    task2d = tasks.get("rotation", input_shape=(8, 8, 1), encoder=TINY)
    assert task2d.num_classes == 4 and task2d.chance_accuracy == pytest.approx(0.25)


def test_network_outputs_one_logit_per_class(rng):
    task = tasks.get("rotation", input_shape=(8, 8, 8, 1), encoder=TINY, head_units=(8,))
    logits = task(rng.normal(size=(3, 8, 8, 8, 1)).astype(np.float32))
    assert logits.shape == (3, 10) and logits.dtype == tf.float32


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"input_shape": (8, 8, 6, 1)}, "input_shape"),
        ({"input_shape": (8, 6, 1)}, "input_shape"),
        ({"input_shape": (8, 8, 8, 1), "rotations": "all"}, "rotations"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=f"'{key}'.*Received"):
        tasks.get("rotation", encoder=TINY, **kwargs)



def test_train_on_batch_and_evaluate_accept_keras_batch_forms():
    import keras

    task = tasks.get("rotation", input_shape=(16, 16, 16, 1), head_units=(8,), head_dropout=0.0,
                     encoder={"depth": 1, "base_filters": 2, "dropout": 0.0})
    volume = np.random.default_rng(0).random((16, 16, 16, 1), dtype=np.float32)
    pairs = [task.transform(volume, tf.constant([i, 0], tf.int32)) for i in range(4)]
    inputs = tf.stack([p[0] for p in pairs])
    target = tf.stack([p[1] for p in pairs])
    task.compile(optimizer=keras.optimizers.SGD(0.01))
    logs = task.train_on_batch(inputs, target, return_dict=True)
    assert set(logs) == {"loss", "accuracy"} and np.isfinite(logs["loss"])
    assert np.isfinite(task.evaluate(inputs, target, verbose=0, return_dict=True)["loss"])
    with pytest.raises(ConfigError, match="sample_weight"):
        task.train_on_batch(inputs, target, sample_weight=np.ones(4, "float32"))
