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
"""

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no lock, the swap protocol still holds for one writer
    fcntl = None


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


class FolderBusyError(BlockingIOError):
    """Another process holds the lock of the folder (`folder_lock(..., blocking=False)`)."""


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


@contextlib.contextmanager
def folder_lock(path, *, blocking=True):
    """Hold the lock file `.NAME.lock` beside folder `path` (POSIX `flock`).

    The file holds the holder's pid and is removed on release; a lock file
    left by a killed process is free (the kernel drops the lock with it).

    Args:
        path: the folder the lock guards (it need not exist).
        blocking: wait for the lock (True) or raise `FolderBusyError` naming the holder.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    if fcntl is None:
        yield
        return
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderBusyError(errno.EAGAIN, f"{path} is being written by another process "
                                  f"(pid {holder})") from None
        # The previous holder may have removed the file between our open and flock.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.unlink(lock)
        os.close(fd)


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
