"""Atomic writes: a reader sees the old file (or folder) or the complete new one, never a part.

Every file that must not be half-written (NIfTI volumes, manifests, run
configs, figures, archives) goes through `atomic_path`: write to a temporary
name in the same folder, then `os.replace`, which is atomic on one file system.
Every folder that must appear whole (presets, SavedModels, extracted archives)
goes through `atomic_dir`.
"""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


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


def replace_dir(src, dst):
    """Move folder `src` to `dst`, replacing an existing `dst` (same file system).

    `os.replace` cannot replace a non-empty folder, so an existing `dst` is
    first renamed aside and removed after the new one is in place.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    old = None
    if os.path.exists(dst):
        old = tempfile.mkdtemp(prefix=".old-", dir=os.path.dirname(dst))
        os.replace(dst, os.path.join(old, "x"))
    os.replace(src, dst)
    if old:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield an empty temporary folder beside `path`; it replaces `path` if the block succeeds.

    The one atomic directory replace: presets, SavedModels and extracted
    archives are written through it, so a reader sees the old folder or the
    complete new one. On any exception the temporary folder is removed and
    `path` is left as it was.

    Example:

    >>> with atomic_dir("export/preset") as tmp:
    ...     (tmp / "config.json").write_text("{}")  # doctest: +SKIP
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        target = holder / path.name
        target.mkdir()
        yield target
        replace_dir(target, path)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
