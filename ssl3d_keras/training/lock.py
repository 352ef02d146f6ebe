"""One writer per run directory: an advisory lock file that names its holder.

Two runs writing into one folder interleave their metrics and overwrite each
other's checkpoints. `RunLock` holds an exclusive `fcntl.flock` on the run's
`run.lock` for as long as the run writes. The kernel releases it when the
process ends, however it ends; the file itself records the holder (pid, host,
start time) so that a refused run can say who holds the folder. A file left
behind by a killed run (a dead pid on this host) is taken over with a warning.

Example:

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder, RunLock(folder) as lock:
...     sorted(lock.holder)
['host', 'pid', 'started']
"""

import datetime
import errno
import json
import logging
import os
import socket
from pathlib import Path

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.training.rundir import RunDir

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the pid record alone decides
    fcntl = None

__all__ = ["RunLock", "read_holder"]

logger = logging.getLogger("ssl3d_keras")


def read_holder(path):
    """The holder record `{pid, host, started}` of a lock file, or None if unreadable."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # someone else's process, or a record we cannot judge: assume alive
    return True


def _describe(record):
    if not record:
        return "another process (its record is unreadable)"
    return (f"pid {record.get('pid')} on host {record.get('host')} since "
            f"{record.get('started')}")


class RunLock:
    """Context manager holding the exclusive lock of a run directory.

    Args:
        run_dir: the run directory (must exist).

    Attributes:
        holder: the record written for this process (`pid`, `host`, `started`).

    Raises:
        ConfigError: (key `out`) another live process holds the folder; the
            message names its pid, host and start time.
        OSError: the lock file cannot be created (e.g. a read-only folder).
    """

    def __init__(self, run_dir):
        self.path = RunDir(run_dir).lock
        self.holder = None
        self._fd = None

    def __enter__(self):
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._acquire(fd)
                if self._still_linked(fd):
                    break
            except BaseException:
                os.close(fd)
                raise
            # The holder we waited on removed this file as it released it: lock the new one.
            os.close(fd)
        self._fd = fd
        return self

    def _still_linked(self, fd):
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _acquire(self, fd):
        previous = read_holder(self.path)
        host = socket.gethostname()
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                self._refuse(previous)
        elif previous and previous.get("host") == host and _pid_alive(previous.get("pid")):
            self._refuse(previous)
        if previous and previous.get("pid") != os.getpid():
            # We hold the lock, so its previous holder is gone: killed without releasing it.
            same_host = previous.get("host") == host
            if not same_host or not _pid_alive(previous.get("pid")):
                logger.warning("Taking over the lock of %s, which stopped without releasing "
                               "it (%s)", _describe(previous), self.path)
        self.holder = {"pid": os.getpid(), "host": host,
                       "started": datetime.datetime.now().astimezone().isoformat(
                           timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.holder).encode(), 0)
        os.fsync(fd)

    def _refuse(self, record):
        raise ConfigError("out", f"{self.path.parent} is in use by another run: "
                          f"{_describe(record)}. Wait for it to finish (or stop it), or choose "
                          f"another output folder. Received: out={str(self.path.parent)!r}")

    def __exit__(self, *exc):
        if self._fd is None:
            return False
        try:
            # Unlink while still holding the lock, so a waiting run never sees our record.
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(self._fd)  # releases the flock
            self._fd = None
        return False
