"""The export folder as a whole: built beside `OUT`, swapped in at once, marked complete.

An export is built in a folder beside `OUT` and swapped in whole
(`export_folder`, over `ssl3d_keras.atomic.atomic_dir`); `OUT/export.json`,
the completion marker, is its last file. It names
what the export was made from (the run and its checkpoint, when there is one)
and lists every file of the export with its sha256, so a loader can tell a
finished export from a folder assembled by hand, left by an older version, or
mixed from two checkpoints, and refuse it.

```
{"format": "ssl3d-export/1", "formats": ["preset", "savedmodel", "hub"],
 "source": {"run": "/abs/runs/rot", "checkpoint": "ckpt-300", "checkpoint_sha256": "..."},
 "files": {"hub.tar.gz": "<sha256>", "preset/config.json": "<sha256>", ...}}
```
"""

import contextlib
import json
import sys
from pathlib import Path

from ssl3d_keras.atomic import FolderBusyError, atomic_dir, write_json_atomic
from ssl3d_keras.checksum import sha256_file
from ssl3d_keras.errors import ExportError

__all__ = ["FORMAT", "MARKER_FILE", "export_folder", "file_manifest", "read_marker",
           "verify_part", "write_marker"]

MARKER_FILE = "export.json"
FORMAT = "ssl3d-export/1"


@contextlib.contextmanager
def export_folder(out_dir, allowed):
    """Yield an empty build folder that replaces the export folder `out_dir` whole on success.

    Args:
        out_dir: the export folder; it must be missing, or hold only names that
            `allowed` (a compiled regex) fully matches: an earlier export's parts
            and the temp names older versions left, so that replacing it never
            deletes a user's files.
        allowed: `re.Pattern` of the entry names an export folder may hold.

    Raises:
        ExportError: `out_dir` is a file or holds other files, another process
            is exporting into it, or writing failed (an earlier export there is
            then unchanged).
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExportError(f"{out_dir}: the export folder is a file")
        foreign = sorted(p.name for p in out_dir.iterdir() if not allowed.fullmatch(p.name))
        if foreign:
            raise ExportError(f"{out_dir}: holds files that are not part of an export, which "
                              f"replacing it would delete: {foreign[:5]}; choose a new or "
                              "empty folder, or an earlier export")
    try:
        with atomic_dir(out_dir, blocking=False) as build:
            yield build
    except FolderBusyError as e:
        raise ExportError(f"{e.strerror}; wait for that export to finish or choose another "
                          "output folder") from None
    except _write_errors() as e:
        raise ExportError(f"{out_dir}: writing the export failed ({_one_line(e)}); an earlier "
                          "export there is unchanged") from None


def _write_errors():
    """OSError, and TensorFlow's op errors (a full disk inside `tf.saved_model.save` is one)."""
    tf = sys.modules.get("tensorflow")
    return (OSError, tf.errors.OpError) if tf is not None else (OSError,)


def _one_line(error):
    return " ".join(str(getattr(error, "message", None) or error).split())


def file_manifest(folder):
    """`{relative posix path: sha256}` of every file under `folder` except the marker, sorted."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in files
            if p.relative_to(folder).as_posix() != MARKER_FILE}


def write_marker(folder, *, formats, source=None):
    """Write `folder/export.json` listing the folder's files; call it after every other file.

    Args:
        folder: the export folder (while it is still being built).
        formats: the formats written, e.g. `("preset", "savedmodel", "hub")`.
        source: JSON-ready dict saying what was exported (run, checkpoint), or None.

    Returns:
        The marker dict.
    """
    marker = {"format": FORMAT, "formats": list(formats), "source": source,
              "files": file_manifest(folder)}
    write_json_atomic(Path(folder) / MARKER_FILE, marker, sort_keys=True)
    return marker


def _incomplete(folder, problem):
    return ExportError(f"{folder}: {problem}. This is not a whole export (interrupted, mixed "
                       f"from two runs, or written by an older version): re-run "
                       f"`ssl3d export RUN_DIR --out {folder}`")


def read_marker(folder):
    """The `export.json` dict of an export folder.

    Raises:
        ExportError: it is missing, not JSON, or not an ssl3d export marker.
    """
    path = Path(folder) / MARKER_FILE
    try:
        marker = json.loads(path.read_text())
    except FileNotFoundError:
        raise _incomplete(folder, f"no {MARKER_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _incomplete(folder, f"{MARKER_FILE} is unreadable ({e})") from None
    if (not isinstance(marker, dict) or marker.get("format") != FORMAT
            or not isinstance(marker.get("files"), dict)
            or not isinstance(marker.get("formats"), list)):
        raise _incomplete(folder, f"{MARKER_FILE} is not an {FORMAT} marker")
    return marker


def verify_part(folder, part, marker=None):
    """Check that the files of `part` (a subfolder or a file of the export) are those listed.

    Every listed file under `part` must be there with its sha256, and no other
    file may be.

    Args:
        folder: the export folder.
        part: `"preset"`, `"savedmodel"` or `"hub.tar.gz"`.
        marker: the marker dict (read from `folder` if None).

    Raises:
        ExportError: naming the missing, changed or unlisted file.
    """
    folder = Path(folder)
    marker = marker or read_marker(folder)
    listed = {name: digest for name, digest in marker["files"].items()
              if name == part or name.startswith(f"{part}/")}
    if not listed:
        raise _incomplete(folder, f"{MARKER_FILE} lists no file of '{part}'")
    root = folder / part
    present = {p.relative_to(folder).as_posix()
               for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()}
    missing, unlisted = sorted(set(listed) - present), sorted(present - set(listed))
    if missing:
        raise _incomplete(folder, f"{missing} listed in {MARKER_FILE} but missing")
    if unlisted:
        raise _incomplete(folder, f"{unlisted} not listed in {MARKER_FILE}")
    for name, expected in sorted(listed.items()):
        actual = sha256_file(folder / name)
        if actual != expected:
            raise _incomplete(folder, f"'{name}' differs from {MARKER_FILE} (sha256 {actual}, "
                                      f"listed {expected})")
