"""Atomic writes: a reader sees the old file (or folder) or the complete new one, never a part.

Every file that must not be half-written (NIfTI volumes, manifests, run
configs, figures, archives) goes through `atomic_path`: write to a temporary
name in the same folder, then `os.replace`, which is atomic on one file system.
Every folder that must appear whole (presets, SavedModels, whole exports,
extracted archives) goes through `atomic_dir`.

A folder cannot be swapped in one rename when the old one exists, so the swap
is two renames (old aside to `.NAME.old-*`, new into place) under a lock file
`.NAME.lock` beside it. A kill between them leaves `NAME` missing and the old
folder aside: `recover_dir` (run by the next `atomic_dir` on that path, and by
loaders that find `NAME` missing) puts the old folder back, and removes the
leftovers of killed writers (`.NAME.old-*`, `.NAME.new-*`).

The lock is the project's one advisory lock (`hold_lock`), also held by a run
over its run directory (`ssl3d_keras.training.lock.RunLock`): an exclusive
`flock` on a file that records its holder as JSON `{pid, host, started}`. The
kernel drops the lock when the holder dies, however it dies; the record stays
so that a refused writer can say who holds the lock, and a file left by a
killed holder is taken over with a warning naming it.
"""

import contextlib
import datetime
import errno
import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the holder record alone decides
    fcntl = None

logger = logging.getLogger("ssl3d_keras")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds.

    The temporary name keeps `path`'s suffixes (e.g. `.nii.gz`), so writers that
    pick a format from the extension behave the same. On any exception the
    temporary file is removed and `path` is left as it was.

    Example:

    >>> with atomic_path("out/volume.nii.gz") as tmp:  # doctest: +SKIP
    ...     nibabel.save(image, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes),
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path, text):
    """Write `text` to `path` atomically. Returns the `Path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path, data, **dumps_kwargs):
    """Write `data` as indented JSON (trailing newline) to `path` atomically, synced to disk.

    Args:
        path: destination file.
        data: JSON-serialisable object.
        **dumps_kwargs: passed to `json.dumps` (e.g. `allow_nan=False`, `sort_keys=True`).

    Returns:
        The `Path` written.
    """
    text = json.dumps(data, indent=2, **dumps_kwargs) + "\n"
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def _sibling(path, kind):
    return path.parent / f".{path.name}.{kind}-{secrets.token_hex(4)}"


def _leftovers(path, kind):
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{kind}-[0-9a-f]{{8}}")
    if not path.parent.is_dir():
        return []
    return sorted((p for p in path.parent.iterdir() if pattern.fullmatch(p.name)),
                  key=lambda p: p.stat().st_mtime)


def has_leftovers(path):
    """True if a killed swap of `path` left folders beside it (see `recover_dir`)."""
    path = Path(path).absolute()
    return bool(_leftovers(path, "old") or _leftovers(path, "new"))


class LockBusyError(BlockingIOError):
    """Another live process holds a lock asked for without waiting (`hold_lock(..., blocking=False)`).

    Args:
        path: the lock file.
        holder: the holder's record `{pid, host, started}`, or None if unreadable.
        message: the error text (default: the lock file and its holder).
    """

    def __init__(self, path, holder, message=None):
        self.path = Path(path)
        self.holder = holder
        super().__init__(errno.EAGAIN, message or f"{path} is held by {describe_holder(holder)}")


class FolderBusyError(LockBusyError):
    """Another process holds the lock of the folder (`folder_lock(..., blocking=False)`)."""


def read_holder(path):
    """The holder record `{pid, host, started}` of a lock file, or None if unreadable."""
    try:
        return _parse_holder(Path(path).read_bytes())
    except OSError:
        return None


def _parse_holder(data):
    try:
        record = json.loads(data)
    except ValueError:  # empty, or written by an older version (a bare pid)
        return None
    return record if isinstance(record, dict) else None


def describe_holder(record):
    """`"pid 12 on host gpu1 since 2026-11-29T10:00:00+00:00"`: a lock holder, for messages."""
    if not record:
        return "an unknown holder (its record is unreadable)"
    return f"pid {record.get('pid')} on host {record.get('host')} since {record.get('started')}"


def _pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # someone else's process, or a record we cannot judge: assume alive
    return True


def _holder_alive(record):
    """True if the record's process still runs on this host (another host's cannot be judged)."""
    return (bool(record) and record.get("host") == socket.gethostname()
            and _pid_alive(record.get("pid")))


def _busy_holder(fd):
    """The record of the live holder of `fd`'s lock; it writes it just after locking."""
    for _ in range(20):
        record = _parse_holder(os.pread(fd, 4096, 0))
        if record:
            return record
        time.sleep(0.01)
    return None


@contextlib.contextmanager
def hold_lock(path, *, blocking=True):
    """Hold the exclusive advisory lock of the file `path` and record this process in it.

    The one lock of the project: folder swaps (`folder_lock`) and runs
    (`ssl3d_keras.training.lock.RunLock`) both hold it. It is a POSIX `flock`,
    which the kernel releases when the holder dies; the file holds the JSON
    record `{pid, host, started}` of its holder and is removed on release. A
    record left by a holder that was killed is taken over with a warning
    naming it. Without `fcntl` (not POSIX) a record whose process still runs
    on this host is taken as held.

    Args:
        path: the lock file (its folder must exist).
        blocking: wait for the holder to release it (True), or raise
            `LockBusyError` naming the holder.

    Yields:
        The record written for this process (`pid`, `host`, `started`).

    Raises:
        LockBusyError: `blocking=False` and another live process holds it
            (this process too, through another `hold_lock`).
        OSError: the lock file cannot be created (e.g. a read-only folder).

    Example:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with hold_lock(f"{folder}/run.lock") as holder:
    ...         sorted(holder)
    ['host', 'pid', 'started']
    """
    path = Path(path)
    fd = _acquire(path, blocking)
    try:
        previous = _parse_holder(os.pread(fd, 4096, 0))
        alive = _holder_alive(previous)
        if fcntl is None and alive:
            raise LockBusyError(path, previous)
        if previous and not alive:
            # We hold the lock, so its previous holder is gone: killed without releasing it.
            logger.warning("Taking over the lock of %s, which stopped without releasing it (%s)",
                           describe_holder(previous), path)
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        yield holder
    finally:
        try:
            # Unlink while still holding the lock, so a waiting writer never sees our record.
            path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)  # releases the flock


def _acquire(path, blocking):
    """Open and flock `path`; returns the descriptor of the file still linked at `path`."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as e:
            busy = e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
            record = _busy_holder(fd) if busy else None
            os.close(fd)
            if busy:
                raise LockBusyError(path, record) from None
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        # The holder we waited on removed this file as it released it: lock the new one.
        os.close(fd)


@contextlib.contextmanager
def folder_lock(path, *, blocking=True):
    """Hold the lock file `.NAME.lock` beside folder `path` (`hold_lock`).

    Args:
        path: the folder the lock guards (it need not exist).
        blocking: wait for the lock (True) or raise `FolderBusyError` naming the holder.

    Yields:
        The holder record written for this process (`pid`, `host`, `started`).
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        try:
            holder = stack.enter_context(
                hold_lock(path.parent / f".{path.name}.lock", blocking=blocking))
        except LockBusyError as e:
            raise FolderBusyError(e.path, e.holder, f"{path} is being written by another "
                                  f"process: {describe_holder(e.holder)}") from None
        yield holder


def recover_dir(path):
    """Finish or undo a swap of folder `path` that a kill interrupted; call it holding the lock.

    If `path` is missing, the newest folder set aside (`.NAME.old-*`) is put
    back: the old folder was whole, the new one may not be. Every other
    leftover (`.NAME.old-*`, `.NAME.new-*` build folders) is removed.

    Returns:
        True if `path` was restored.
    """
    path = Path(path).absolute()
    restored = False
    for holder in reversed(_leftovers(path, "old")):
        kept = holder / path.name
        if not restored and not path.exists() and kept.is_dir():
            os.replace(kept, path)
            restored = True
        shutil.rmtree(holder, ignore_errors=True)
    for holder in _leftovers(path, "new"):
        shutil.rmtree(holder, ignore_errors=True)
    return restored


def replace_dir(src, dst):
    """Move folder `src` to `dst`, replacing an existing `dst` (same file system).

    `os.replace` cannot replace a non-empty folder, so an existing `dst` is
    first renamed aside to `.NAME.old-*` and removed once the new one is in
    place; a kill in between is undone by `recover_dir(dst)`.
    """
    src, dst = Path(src), Path(dst).absolute()
    old = None
    if dst.exists():
        old = _sibling(dst, "old")
        old.mkdir()
        os.replace(dst, old / dst.name)
    try:
        os.replace(src, dst)
    except BaseException:
        if old is not None and not dst.exists():
            os.replace(old / dst.name, dst)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path, *, blocking=True):
    """Yield an empty temporary folder beside `path`; it replaces `path` if the block succeeds.

    The one atomic directory replace: presets, SavedModels, whole exports and
    extracted archives are written through it, so a reader sees the old folder
    or the complete new one. Writers of one path take turns (`folder_lock`);
    the leftovers of a killed writer are recovered first (`recover_dir`). On
    any exception the temporary folder is removed and `path` is left as it was.

    Args:
        path: the folder to write.
        blocking: wait for another writer of `path` (True) or raise `FolderBusyError`.

    Example:

    >>> with atomic_dir("export/preset") as tmp:
    ...     (tmp / "config.json").write_text("{}")  # doctest: +SKIP
    """
    path = Path(path).absolute()
    with folder_lock(path, blocking=blocking):
        recover_dir(path)
        holder = _sibling(path, "new")
        holder.mkdir()
        try:
            target = holder / path.name
            target.mkdir()
            yield target
            replace_dir(target, path)
        finally:
            shutil.rmtree(holder, ignore_errors=True)
