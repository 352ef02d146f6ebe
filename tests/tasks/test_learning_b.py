"""CPC and exemplar networks learn on phantoms: the loss drops and accuracy beats chance.

Each run trains a tiny encoder on 32^3 (3D) or 64^2 (2D) phantoms for a fixed
number of seeded steps, then measures loss and accuracy on a batch of phantoms
it never saw, before and after training.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras import tasks
from ssl3d_keras.data.phantoms import make_phantom

TINY = {"depth": 1, "base_filters": 4, "dropout": 0.0, "norm": "batch"}


def phantoms(seeds, dim):
    size = 32 if dim == 3 else 64
    return tf.constant(np.stack([make_phantom(s, size=size, dim=dim)[0] for s in seeds]))


def train(
    name,
    dim,
    *,
    steps,
    batch_size,
    learning_rate=3e-3,
    held_out=None,
    held_out_negatives=None,
    **task_args,
):
    """Train `steps` Adam steps; return the task and its (loss, accuracy) on
    `held_out` (default `batch_size`) unseen phantoms before and after training,
    measured with exemplar negatives `held_out_negatives` if given."""
    keras.utils.set_random_seed(0)
    held_out = held_out or batch_size
    volumes, unseen = phantoms(range(16), dim), phantoms(range(100, 100 + held_out), dim)
    task = tasks.get(name, input_shape=volumes.shape[1:], encoder=dict(TINY), **task_args)

    def example(volumes, i):
        i = tf.cast(i, tf.int32)
        return task.transform(tf.gather(volumes, i % volumes.shape[0]), tf.stack([i, 7]))

    data = tf.data.Dataset.range(steps * batch_size).shuffle(64, seed=0)
    data = data.map(lambda i: example(volumes, i)).batch(batch_size)
    held_out = next(
        iter(tf.data.Dataset.range(held_out).map(lambda i: example(unseen, i)).batch(held_out))
    )
    optimizer = keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(inputs, target):
        with tf.GradientTape() as tape:
            loss, _ = task.compute_loss_and_metrics(inputs, target, training=True)
        gradients = tape.gradient(loss, task.trainable_variables)
        optimizer.apply_gradients(zip(gradients, task.trainable_variables, strict=True))

    def measure():
        negatives = getattr(task, "negatives", None)
        if held_out_negatives:
            task.negatives = held_out_negatives
        # Batch statistics (training=True) with dropout off: no lag of BatchNorm averages.
        _, metrics = task.compute_loss_and_metrics(*held_out, training=True)
        if held_out_negatives:
            task.negatives = negatives
        return float(metrics["loss"]), float(metrics["accuracy"])

    before = measure()
    for inputs, target in data:
        step(inputs, target)
    return task, before, measure()


@pytest.mark.parametrize("dim, batch_size, steps", [(3, 4, 80), (2, 8, 150)], ids=["3d", "2d"])
def test_cpc_info_nce_learns(dim, batch_size, steps):
    task, before, after = train(
        "cpc", dim, steps=steps, batch_size=batch_size, code_size=32, context_units=32
    )
    candidates = batch_size * task.num_columns
    assert task.chance_accuracy == pytest.approx(1 / candidates)
    # Uninformative codes score log(candidates); the trained ones are clearly better.
    assert after[0] < math.log(candidates) - 0.5, (before, after)
    assert after[0] < before[0] - 0.5, (before, after)
    assert after[1] > 2.5 * task.chance_accuracy, (before, after)


@pytest.mark.parametrize("dim, steps", [(3, 50), (2, 100)], ids=["3d", "2d"])
def test_exemplar_learns(dim, steps):
    task, before, after = train(
        "exemplar",
        dim,
        steps=steps,
        batch_size=8,
        held_out=32,
        learning_rate=1e-3,
        embedding_size=32,
    )
    # An untrained encoder already keeps much of a view's similarity to its original,
    # so accuracy starts above chance (0.6-0.75); training has to cut the triplet loss.
    assert after[0] < 0.8 * before[0], (before, after)
    assert after[1] >= 0.75 > task.chance_accuracy, (before, after)


@pytest.mark.slow
def test_cpc_binary_variant_learns():
    task, before, after = train(
        "cpc", 3, steps=80, batch_size=4, loss="binary", code_size=32, context_units=32
    )
    assert after[0] < math.log(2) - 0.15, (before, after)
    assert after[1] > 0.7, (before, after)


@pytest.mark.slow
def test_exemplar_semihard_negatives_learn():
    # Semi-hard negatives are farther than the positive by construction, so both
    # measurements use the plain in-batch negatives.
    task, before, after = train(
        "exemplar",
        3,
        steps=80,
        batch_size=8,
        held_out=32,
        learning_rate=1e-3,
        embedding_size=32,
        negatives="semihard",
        held_out_negatives="batch",
    )
    assert after[0] < 0.8 * before[0], (before, after)
    assert after[1] >= 0.75, (before, after)
