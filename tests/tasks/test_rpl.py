"""Relative patch location: (centre, query) pairs and the raster-order label of the query."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras import tasks
from ssl3d_keras.errors import ConfigError
from tests.tasks.test_jigsaw import cell_crop

TINY = {"depth": 1, "base_filters": 4, "dropout": 0.0, "norm": "batch"}


def examples(task, volume, n, training):
    v = tf.constant(volume)
    data = tf.data.Dataset.range(n).map(
        lambda i: task.transform(v, tf.stack([tf.cast(i, tf.int32), 5]), training=training)
    )
    inputs, labels = next(iter(data.batch(n)))
    return inputs.numpy(), labels.numpy()


@pytest.mark.parametrize("shape", [(24, 27, 30, 2), (30, 36, 1)], ids=["3d", "2d"])
def test_evaluation_pairs_are_centre_cuts_of_centre_and_labelled_cell(shape, rng):
    volume = rng.normal(size=shape).astype(np.float32)
    task = tasks.get("rpl", input_shape=shape, encoder=TINY)
    dim = len(shape) - 1
    cells = 3**dim
    # Reference written from the definition: the non-centre cells in raster order.
    others = [c for c in range(cells) if c != cells // 2]
    centre_offset = (1,) * dim
    inputs, labels = examples(task, volume, 300, training=False)
    assert inputs.shape[1] == 2 and labels.dtype == np.int32
    assert sorted(set(labels.tolist())) == list(range(cells - 1)), "not every target occurs"
    assert task.num_classes == cells - 1 and task.chance_accuracy == pytest.approx(1 / (cells - 1))
    for x, label in zip(inputs, labels, strict=True):
        np.testing.assert_array_equal(x[0], cell_crop(volume, cells // 2, 3, 3, centre_offset))
        np.testing.assert_array_equal(x[1], cell_crop(volume, others[label], 3, 3, centre_offset))


def test_training_pairs_are_jittered_inside_their_cells(rng):
    shape = (24, 24, 24, 1)
    volume = rng.normal(size=shape).astype(np.float32)
    task = tasks.get("rpl", input_shape=shape, encoder=TINY)
    others = [c for c in range(27) if c != 13]
    inputs, labels = examples(task, volume, 20, training=True)
    offsets = set()
    for x, label in zip(inputs, labels, strict=True):
        for patch, cell in zip(x, (13, others[label]), strict=True):
            found = [o for o in itertools.product(range(4), repeat=3)
                     if np.array_equal(patch, cell_crop(volume, cell, 3, 3, o))]
            assert len(found) == 1, f"patch is not a crop of cell {cell}"
            offsets.add(found[0])
    assert len(offsets) > 10


def test_label_to_cell_offset_is_raster_order():
    task = tasks.get("rpl", input_shape=(24, 24, 24, 1), encoder=TINY)
    # Hand-written: raster order runs the last axis fastest; the centre (cell 13) is skipped.
    assert task.cell_offset(0) == (-1, -1, -1)
    assert task.cell_offset(1) == (-1, -1, 0)
    assert task.cell_offset(12) == (0, 0, -1)
    assert task.cell_offset(13) == (0, 0, 1)
    assert task.cell_offset(25) == (1, 1, 1)
    offsets = [task.cell_offset(k) for k in range(26)]
    assert offsets == sorted(offsets) and len(set(offsets)) == 26
    task2d = tasks.get("rpl", input_shape=(24, 24, 1), encoder=TINY)
    assert [task2d.cell_offset(k) for k in range(8)] == [
        (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def test_network_outputs_one_logit_per_cell(rng):
    task = tasks.get("rpl", input_shape=(24, 24, 24, 1), encoder=TINY, head_units=(8,))
    inputs, _ = examples(task, rng.normal(size=(24, 24, 24, 1)).astype(np.float32), 3, True)
    logits = task(inputs)
    assert logits.shape == (3, 26) and logits.dtype == tf.float32


@pytest.mark.parametrize(("kwargs", "key"), [({"grid": 4}, "grid"), ({"grid": 7}, "input_shape")])
def test_bad_arguments_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        tasks.get("rpl", input_shape=(24, 24, 1), encoder=TINY, **kwargs)
