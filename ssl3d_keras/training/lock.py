"""One writer per run directory: the run holds the project's advisory lock on `RUN/run.lock`.

Two runs writing into one folder interleave their metrics and overwrite each
other's checkpoints. `RunLock` holds `ssl3d_keras.atomic.hold_lock` on the
run's `run.lock` for as long as the run writes: the lock every folder swap
holds too. The kernel releases it when the process ends, however it ends; the
file records the holder (pid, host, start time) so that a refused run can say
who holds the folder, and a file left behind by a killed run is taken over
with a warning.

Example:

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder, RunLock(folder) as lock:
...     sorted(lock.holder)
['host', 'pid', 'started']
"""

import contextlib

from ssl3d_keras.atomic import LockBusyError, describe_holder, hold_lock, read_holder
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.training.rundir import RunDir

__all__ = ["RunLock", "read_holder"]


class RunLock:
    """Context manager holding the exclusive lock of a run directory.

    Args:
        run_dir: the run directory (must exist).

    Attributes:
        path: the lock file, `RUN/run.lock`.
        holder: the record written for this process (`pid`, `host`, `started`).

    Raises:
        ConfigError: (key `out`) another live process holds the folder; the
            message names its pid, host and start time.
        OSError: the lock file cannot be created (e.g. a read-only folder).
    """

    def __init__(self, run_dir):
        self.path = RunDir(run_dir).lock
        self.holder = None
        self._held = None

    def __enter__(self):
        held = contextlib.ExitStack()
        try:
            self.holder = held.enter_context(hold_lock(self.path, blocking=False))
        except LockBusyError as e:
            raise ConfigError("out", f"{self.path.parent} is in use by another run: "
                              f"{describe_holder(e.holder)}. Wait for it to finish (or stop it), "
                              f"or choose another output folder. "
                              f"Received: out={str(self.path.parent)!r}") from None
        self._held = held
        return self

    def __exit__(self, *exc):
        held, self._held = self._held, None
        if held is not None:
            held.close()
        return False
