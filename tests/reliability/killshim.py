"""Fault injection for the kill suite: run `ssl3d` with a SIGKILL (or a signal, or a write
limit) at a chosen moment, without touching the library.

The suite runs `python killshim.py ARGS...`, which is `python -m ssl3d_keras ARGS...` after
wrapping a few calls. Environment variables choose what happens:

- `KILLSHIM_AT="HOOK:N"`: SIGKILL this process at the Nth call of HOOK (counted from 1), before
  the call runs. `"HOOK:N:SECONDS"` starts the call and kills SECONDS later, while it runs
  (a checkpoint's data file, a SavedModel, a training step being written or computed).
- `KILLSHIM_SIGNAL="SIGTERM"` (or `SIGINT`): send that signal instead of SIGKILL (a second
  one, "SIGINT,SIGINT", sends it twice, 0.2 s apart).
- `KILLSHIM_FSIZE="HOOK:N:BYTES"`: at the Nth call of HOOK, cap the size of any file this
  process writes at BYTES (`RLIMIT_FSIZE`): a write past it fails with EFBIG, as a full disk
  fails a write with ENOSPC, at a chosen byte of a C++ writer too.
- `KILLSHIM_WATCH="GLOB"`: SIGKILL as soon as a path matching GLOB appears (a thread polls
  every 0.2 ms): a moment inside a C++ writer, e.g. `run/checkpoints/ckpt-8_temp*` while
  TensorFlow writes the checkpoint's data before merging it into place.
- `KILLSHIM_FILL="HOOK:N:PATH"`: at the Nth call of HOOK, write PATH until its file system
  is full (ENOSPC), so the writes after it fail as on a full disk (use a small tmpfs).
- `KILLSHIM_TRACE=PATH`: append one line per hooked call, `HOOK N DETAIL`, flushed at once, so
  the test knows what ran before the kill (e.g. the last step trained).

Hooks: `step` (after `TrainingLogger.step` logged a step; the detail is the step), `save`
(`tf.train.CheckpointManager.save`), `saved` (after it returned), `record` (the manager
recording its `checkpoint` index file; called twice per save: after the files, after the
sweep), `replace` / `replaced` (`os.replace`, before / after: every atomic rename of the
project), `tfrecord` (`tf.io.TFRecordWriter.write`, one case into a shard), `savedmodel`
(`tf.saved_model.save`), `rmtree` (`shutil.rmtree`).
"""

import os
import runpy
import signal
import sys
import threading

_counts = {}


def _parse(name):
    value = os.environ.get(name)
    if not value:
        return None
    hook, n, *rest = value.split(":")
    return hook, int(n), (float(rest[0]) if rest else None)


_KILL = _parse("KILLSHIM_AT")
_FILL = os.environ.get("KILLSHIM_FILL")
_FILL = _FILL.split(":", 2) if _FILL else None
_FSIZE = _parse("KILLSHIM_FSIZE")
_SIGNALS = [getattr(signal, s) for s in os.environ.get("KILLSHIM_SIGNAL", "SIGKILL").split(",")]
_TRACE = os.environ.get("KILLSHIM_TRACE")


def _trace(hook, n, detail=""):
    if _TRACE:
        with open(_TRACE, "a") as f:
            f.write(f"{hook} {n} {detail}\n")
            f.flush()
            os.fsync(f.fileno())


def _send():
    for i, signum in enumerate(_SIGNALS):
        if i:
            threading.Event().wait(0.2)
        os.kill(os.getpid(), signum)


def _hit(hook, detail=""):
    """Count a call of `hook`; kill now, or arm a timer, or cap file sizes, as asked."""
    n = _counts[hook] = _counts.get(hook, 0) + 1
    _trace(hook, n, detail)
    if _FSIZE and _FSIZE[0] == hook and _FSIZE[1] == n:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write (EFBIG), do not die
        limit = int(_FSIZE[2])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(
            resource.RLIMIT_FSIZE)[1]))
        _trace("fsize", 1, limit)
    if _FILL and _FILL[0] == hook and int(_FILL[1]) == n:
        _fill(_FILL[2])
    if _KILL and _KILL[0] == hook and _KILL[1] == n:
        _trace("kill", n, hook)
        if _KILL[2] is None:
            _send()
        else:
            timer = threading.Timer(_KILL[2], _send)
            timer.daemon = True
            timer.start()


def _watch(pattern):
    import glob

    while not glob.glob(pattern):
        threading.Event().wait(0.0002)
    _trace("watch", 1, pattern)
    _send()


def _fill(path):
    written = 0
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                written += f.write(b"\0" * 4096)
        except OSError:
            pass
    _trace("fill", 1, written)


def _wrap(owner, name, hook, *, after=None, detail=None):
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        text = detail(*args, **kwargs) if detail else ""
        _hit(hook, text)
        result = real(*args, **kwargs)
        if after:
            _hit(after, text)
        return result

    wrapper.__wrapped__ = real
    setattr(owner, name, wrapper)


def install():
    """Wrap the hooked calls (TensorFlow is imported here)."""
    import shutil

    from ssl3d_keras.cli.main import import_tensorflow_quietly

    import_tensorflow_quietly()  # as `ssl3d` does, so its stderr is what a user sees
    import tensorflow as tf

    from ssl3d_keras.training.logging import TrainingLogger

    _wrap(os, "replace", "replace", after="replaced",
          detail=lambda src, dst, **_: f"{os.fspath(src)} -> {os.fspath(dst)}")
    _wrap(shutil, "rmtree", "rmtree", detail=lambda path, *a, **k: os.fspath(path))
    _wrap(tf.train.CheckpointManager, "save", "save", after="saved")
    # The manager's own step between "files written" and "index points to them"; private, so
    # fail loudly if a TensorFlow upgrade renames it rather than silently kill nowhere.
    if not hasattr(tf.train.CheckpointManager, "_record_state"):
        raise RuntimeError("tf.train.CheckpointManager._record_state is gone: update killshim")
    _wrap(tf.train.CheckpointManager, "_record_state", "record")
    _wrap(tf.io.TFRecordWriter, "write", "tfrecord")
    _wrap(tf.saved_model, "save", "savedmodel")

    real_step = TrainingLogger.step

    def step(self, step, *args, **kwargs):
        result = real_step(self, step, *args, **kwargs)
        _hit("step", step)
        return result

    TrainingLogger.step = step


def main(argv):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    install()
    if os.environ.get("KILLSHIM_WATCH"):
        threading.Thread(target=_watch, args=(os.environ["KILLSHIM_WATCH"],),
                         daemon=True).start()
    sys.argv = ["ssl3d", *argv]
    runpy.run_module("ssl3d_keras", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
