"""Each proxy task is learnable: a tiny encoder trained briefly on phantoms beats chance.

Training uses `model.fit` (the task's own `train_step`) on a stream of
examples from 16 phantoms; accuracy is measured on examples (evaluation
transform, fresh seeds) of 8 other phantoms. Add a task by adding a `Case`.

The accuracy is measured with batch statistics in BatchNorm (dropout is 0
everywhere, so that is the only difference from inference mode): the moving
averages (momentum 0.99) need far more than the few dozen steps of a test to
catch up with the weights, so inference mode would measure the averages, not
what was learnt.
"""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras import tasks
from ssl3d_keras.data.phantoms import make_phantom

ENCODER = {"depth": 1, "base_filters": 4, "dropout": 0.0, "norm": "batch"}
HEAD = {"head_units": (64,), "head_dropout": 0.0}


@dataclasses.dataclass(frozen=True)
class Case:
    task: str
    dim: int
    size: int
    min_accuracy: float  # on held-out phantoms; chance is `task.chance_accuracy`
    args: dict = dataclasses.field(default_factory=lambda: dict(HEAD))
    steps: int = 60
    batch_size: int = 16
    learning_rate: float = 3e-3


CASES = [
    # chance 1/10 and 1/4
    pytest.param(Case("rotation", 3, 24, 0.5), id="rotation-3d"),
    pytest.param(Case("rotation", 2, 32, 0.75), id="rotation-2d"),
    # the paper's 100 maximal-Hamming permutations: chance 1/100
    pytest.param(Case("jigsaw", 3, 24, 0.3), id="jigsaw-3d"),
    pytest.param(Case("jigsaw", 2, 48, 0.4), id="jigsaw-2d"),
    # chance 1/26 and 1/8
    pytest.param(Case("rpl", 3, 24, 0.25, steps=100, batch_size=32), id="rpl-3d"),
    pytest.param(Case("rpl", 2, 48, 0.6), id="rpl-2d"),
    # Longer runs: the full rotation group (chance 1/24), RPL on larger patches.
    pytest.param(Case("rotation", 3, 32, 0.5, {**HEAD, "rotations": "cube24"}, steps=200),
                 id="rotation-3d-cube24", marks=pytest.mark.slow),
    pytest.param(Case("rpl", 3, 32, 0.5, steps=300, batch_size=32), id="rpl-3d-long",
                 marks=pytest.mark.slow),
]


def phantoms(seed, n, case):
    return np.stack([make_phantom((seed, i), size=case.size, dim=case.dim)[0] for i in range(n)])


def examples(task, volumes, stream_id, training, batch_size):
    """Endless batches of examples, example `i` from volume `i % n` with seed `(i, stream_id)`."""
    volumes = tf.constant(volumes)
    n = volumes.shape[0]
    return (
        tf.data.Dataset.range(2**31 - 1)
        .map(lambda i: task.transform(
            volumes[i % n], tf.stack([tf.cast(i, tf.int32), stream_id]), training=training))
        .batch(batch_size)
        .prefetch(2)
    )


@pytest.mark.parametrize("case", CASES)
def test_proxy_accuracy_beats_chance(case):
    keras.utils.set_random_seed(0)
    train, held_out = phantoms(1, 16, case), phantoms(2, 8, case)
    task = tasks.get(case.task, input_shape=train.shape[1:], encoder=dict(ENCODER), **case.args)
    assert case.min_accuracy > 2 * task.chance_accuracy, "the bar must be well above chance"
    task.compile(optimizer=keras.optimizers.Adam(case.learning_rate))
    task.fit(examples(task, train, 0, True, case.batch_size), steps_per_epoch=case.steps,
             epochs=1, shuffle=False, verbose=0)

    accuracies = [
        float(task.compute_loss_and_metrics(x, y, training=True)[1]["accuracy"])
        for x, y in examples(task, held_out, 1, False, 32).take(4)
    ]
    accuracy = np.mean(accuracies)
    assert accuracy >= case.min_accuracy, (
        f"{case.task} {case.dim}D: held-out accuracy {accuracy:.3f} < {case.min_accuracy} "
        f"(chance {task.chance_accuracy:.3f})"
    )
