"""Checkpoints of a run and atomic JSON files beside them."""

import json
from pathlib import Path

import tensorflow as tf

from ssl3d_keras.errors import DataError


def read_json(path):
    """Read a JSON file of a run.

    Raises:
        DataError: the file is missing or does not parse.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(path, f"is not valid JSON: {e}") from None


def random_states(model):
    """The `keras.random.SeedGenerator` states of a model (e.g. of its Dropout layers).

    `model.variables` holds them but `model.weights` does not, and
    `tf.train.Checkpoint(model=...)` does not save them: without them a resumed
    run would draw other dropout masks than an uninterrupted one.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class RunCheckpoints:
    """The checkpoints of a run: `tf.train.Checkpoint(model, optimizer, step)`.

    The checkpoint also holds the model's weights as a flat list (`weights`,
    in `model.weights` order) and its random-seed states (`random_state`).

    `tf.train.CheckpointManager` writes each checkpoint under a temporary name
    and renames it, and updates its `checkpoint` index file last, so an
    interrupted save leaves the previous checkpoint as the latest.

    Args:
        directory: the run's `checkpoints/` folder.
        model: the task (`keras.Model`).
        optimizer: the optimiser, or None to restore the model only.
        step: a scalar int64 `tf.Variable` counting finished steps.
        max_to_keep: number of recent checkpoints kept.
    """

    def __init__(self, directory, model, optimizer, step, max_to_keep=3):
        self.directory = str(directory)
        self.step = step
        # The flat weight list also covers any layer a task keeps in a plain Python
        # container, which tf.train.Checkpoint's object graph does not reach through
        # `model` (the heads once did; load_run's test reads this list back).
        objects = {"model": model, "weights": list(model.weights), "step": step}
        seed_states = random_states(model)
        if seed_states:
            objects["random_state"] = seed_states
        if optimizer is not None:
            objects["optimizer"] = optimizer
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory, max_to_keep=max_to_keep, checkpoint_name="ckpt")

    @property
    def latest(self):
        """Path prefix of the latest checkpoint, or None."""
        return self.manager.latest_checkpoint

    def save(self, step):
        """Save the state after `step` finished steps; returns the path prefix."""
        self.step.assign(step)
        return self.manager.save(checkpoint_number=step)

    def restore(self, path=None, *, expect_partial=False):
        """Restore `path` (default: the latest checkpoint); returns the restored step.

        Raises:
            DataError: there is no checkpoint, or it does not match the model.
        """
        path = path or self.latest
        if path is None:
            raise DataError(self.directory, "no checkpoint to restore. Received an empty folder")
        try:
            status = self.checkpoint.restore(path)
            status.assert_existing_objects_matched()
            if expect_partial:
                # e.g. the optimiser slots when only the model is loaded
                status.expect_partial()
        except (tf.errors.NotFoundError, AssertionError, ValueError) as e:
            raise DataError(path, f"checkpoint does not match this run's model: {e}") from None
        return int(self.step.numpy())
