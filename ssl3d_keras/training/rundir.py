"""The names inside a run directory, in one place.

```
config.json     the fully resolved PretrainConfig, with the facts of its data
                (written atomically at start; enough to rebuild the task)
checkpoints/    tf.train.CheckpointManager of Checkpoint(model, optimizer, step)
metrics.csv     step, loss, accuracy, lr, examples_per_sec, wall
tensorboard/    tf.summary scalars of the same
summary.json    steps, final loss/accuracy, chance accuracy, wall time, checkpoints
prepared/       shards prepared from a raw data folder (only then)
run.lock        held while a run writes here: pid, host and start time of its holder
```

Example:

>>> paths = RunDir("runs/rot")
>>> str(paths.config)
'runs/rot/config.json'
>>> str(paths.checkpoint(300))
'runs/rot/checkpoints/ckpt-300'
"""

import dataclasses
from pathlib import Path

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "LOCK_FILE", "METRICS_FILE", "PREPARED_DIR",
           "SUMMARY_FILE", "TENSORBOARD_DIR", "RunDir"]

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
PREPARED_DIR = "prepared"
LOCK_FILE = "run.lock"


@dataclasses.dataclass(frozen=True)
class RunDir:
    """The paths of one run directory.

    Args:
        root: the run directory (`str` or `Path`).
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self):
        return self.root / CONFIG_FILE

    @property
    def summary(self):
        return self.root / SUMMARY_FILE

    @property
    def checkpoints(self):
        return self.root / CHECKPOINT_DIR

    @property
    def metrics(self):
        return self.root / METRICS_FILE

    @property
    def tensorboard(self):
        return self.root / TENSORBOARD_DIR

    @property
    def prepared(self):
        return self.root / PREPARED_DIR

    @property
    def lock(self):
        return self.root / LOCK_FILE

    def checkpoint(self, step):
        """Path prefix of the checkpoint saved at `step`."""
        return self.checkpoints / f"ckpt-{int(step)}"

    def is_run(self):
        """True if the folder holds a run (its `config.json`)."""
        return self.config.is_file()

    def has_checkpoints(self):
        """True if a checkpoint was saved here."""
        return (self.checkpoints / "checkpoint").is_file()
