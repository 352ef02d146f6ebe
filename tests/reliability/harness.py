"""Run `ssl3d` in a subprocess, kill it at a chosen or random moment, and judge what it left.

The process runs through `killshim.py` beside this file (the hooks and environment variables
are described there); nothing in the library is changed for the suite.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHIM = Path(__file__).with_name("killshim.py")
TIMEOUT = 600

# A tiny deterministic pretraining run: 12 steps, a checkpoint every 4, dropout on in the
# encoder and head and BatchNorm, so a resume must restore weights, optimiser slots, the
# seed states of dropout and the data order to end on the same bits.
PRETRAIN_STEPS, CHECKPOINT_EVERY = 12, 4
PRETRAIN_TINY = [
    "--steps", str(PRETRAIN_STEPS), "--batch-size", "2", "--input-size", "16",
    "--precision", "float32", "--strategy", "default",
    "--set", "encoder.depth=1", "--set", "encoder.base_filters=2",
    "--set", "encoder.norm=batch", "--set", "encoder.dropout=0.3",
    "--set", "task_config.head_units=[8]", "--set", "task_config.head_dropout=0.5",
    "--set", "data.phantoms.n=4", "--set", "data.phantoms.size=16",
    "--set", f"checkpoint_every={CHECKPOINT_EVERY}", "--set", "log_every=1",
]

# `ssl3d prepare` of six phantoms into three shards, so a kill can land between shards.
PREPARE_ARGS = ["--examples-per-shard", "2", "--no-progress"]


@dataclasses.dataclass
class Outcome:
    """What a (killed) `ssl3d` process did: exit code, output, and the hooks it passed."""

    returncode: int
    stdout: str
    stderr: str
    trace: list

    @property
    def killed(self):
        return self.returncode == -signal.SIGKILL

    def hooks(self, name):
        """The details of each call of hook `name`, in order."""
        return [detail for hook, _, detail in self.trace if hook == name]

    @property
    def last_step(self):
        """The last training step the process finished (0 if none)."""
        steps = [int(d) for d in self.hooks("step")]
        return max(steps, default=0)

    def describe(self):
        return (f"exit {self.returncode}; last hooks {self.trace[-4:]}\n"
                f"stdout: {self.stdout[-1500:]}\nstderr: {self.stderr[-3000:]}")


def _env(trace, extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KILLSHIM_TRACE=str(trace))
    for key in ("KILLSHIM_AT", "KILLSHIM_SIGNAL", "KILLSHIM_FSIZE", "KILLSHIM_WATCH",
                "KILLSHIM_FILL"):
        env.pop(key, None)
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


def _read_trace(path):
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        hook, n, *detail = line.split(" ", 2)
        rows.append((hook, int(n), detail[0] if detail else ""))
    return rows


def run_ssl3d(args, trace, *, kill_at=None, send=None, watch=None, fsize=None, fill=None,
              kill_after=None, cwd=None):
    """Run `ssl3d ARGS` through the shim; returns an `Outcome`.

    Args:
        args: the command line after `ssl3d`.
        trace: file the shim appends its hook calls to (removed first).
        kill_at: `"HOOK:N"` or `"HOOK:N:SECONDS"` (KILLSHIM_AT).
        send: signals to send instead of SIGKILL, e.g. `"SIGTERM"` (KILLSHIM_SIGNAL).
        watch: a glob; SIGKILL when a matching path appears (KILLSHIM_WATCH).
        fsize: `"HOOK:N:BYTES"`, a file size cap from that call on (KILLSHIM_FSIZE).
        fill: `"HOOK:N:PATH"`, fill the disk of PATH at that call (KILLSHIM_FILL).
        kill_after: SIGKILL from outside after this many seconds (a random moment).
    """
    trace = Path(trace)
    trace.unlink(missing_ok=True)
    env = _env(trace, {"KILLSHIM_AT": kill_at, "KILLSHIM_SIGNAL": send,
                       "KILLSHIM_WATCH": watch, "KILLSHIM_FSIZE": fsize, "KILLSHIM_FILL": fill})
    process = subprocess.Popen([sys.executable, str(SHIM), *map(str, args)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=cwd)
    if kill_after is not None:
        try:
            stdout, stderr = process.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            stdout, stderr = process.communicate(timeout=TIMEOUT)
    else:
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            raise AssertionError(f"ssl3d {args[:2]} did not finish in {TIMEOUT} s: "
                                 f"{stderr[-2000:]}") from None
    return Outcome(process.returncode, stdout, stderr, _read_trace(trace))


def invoke(args):
    """Run `ssl3d ARGS` in this process (click's CliRunner): for the runs no kill interrupts,
    which then skip a TensorFlow start-up. Returns an `Outcome` without a trace."""
    from click.testing import CliRunner

    from ssl3d_keras.cli.main import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr, [])


def timed(function, *args, **kwargs):
    """`(result, seconds)` of one call."""
    began = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - began


def checkpoint_tensors(prefix):
    """Every tensor of a TensorFlow checkpoint except its save counter, by name.

    Reading every tensor is what makes a half-written checkpoint fail here (a missing or
    short data file, an index that does not parse).
    """
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: np.asarray(reader.get_tensor(name))
            for name, _ in tf.train.list_variables(str(prefix))
            if "save_counter" not in name}


def latest_checkpoint(run_dir):
    import tensorflow as tf

    return tf.train.latest_checkpoint(str(Path(run_dir) / "checkpoints"))


def checkpoint_step(prefix):
    return int(str(prefix).rsplit("-", 1)[1]) if prefix else 0


def assert_checkpoints_whole(run_dir):
    """The checkpoint the run's index names as latest loads in full; returns its step.

    The index (`checkpoints/checkpoint`) is what `--resume` reads: a latest checkpoint that
    is missing or partial would be read as whole. The older ones it lists load too, unless
    a kill came while TensorFlow's sweep was deleting them (its index is rewritten after
    the sweep): those have lost files, never kept a part of a new write.
    """
    import glob

    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(Path(run_dir) / "checkpoints"))
    if state is None:
        return 0
    assert checkpoint_tensors(state.model_checkpoint_path), state.model_checkpoint_path
    for prefix in state.all_model_checkpoint_paths[:-1]:
        if len(glob.glob(f"{glob.escape(prefix)}.*")) == 2:  # .index and one data file
            assert checkpoint_tensors(prefix), prefix
    return checkpoint_step(state.model_checkpoint_path)


def assert_same_tensors(expected, actual, *, atol=0.0):
    """Equal names and values: the same bits with `atol=0`, else within `atol`."""
    assert sorted(expected) == sorted(actual), sorted(set(expected) ^ set(actual))

    def same(a, b):
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if atol == 0 or a.dtype.kind not in "fc":
            return a.tobytes() == b.tobytes()
        return np.allclose(a, b, rtol=0, atol=atol)

    differing = [name for name in expected if not same(expected[name], actual[name])]
    assert not differing, f"{len(differing)} of {len(expected)} tensors differ: {differing[:5]}"


def metrics_steps(run_dir):
    """The steps in a run's metrics.csv, in file order."""
    from ssl3d_keras.training.logging import read_metrics

    return [int(row["step"]) for row in read_metrics(Path(run_dir) / "metrics.csv")]
