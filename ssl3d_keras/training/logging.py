"""What a run reports while it trains: metrics.csv, TensorBoard and a progress bar."""

import csv
import logging
import math
import time
from pathlib import Path

import keras
import tensorflow as tf

from ssl3d_keras.atomic import atomic_path
from ssl3d_keras.training.rundir import RunDir

# `skipped`: steps of the row's window whose update was undone as non-finite
# (`on_nonfinite="skip"`); a file written before it existed reads it as 0.
CSV_COLUMNS = ("step", "loss", "accuracy", "lr", "examples_per_sec", "wall", "skipped")

logger = logging.getLogger("ssl3d_keras")


def _scalar_metadata():
    # data_class 1 is DATA_CLASS_SCALAR of tensorboard's summary.proto
    return tf.compat.v1.SummaryMetadata(
        plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"), data_class=1)


def write_scalar(tag, value):
    """Write a TensorBoard scalar to the default summary writer.

    Same record as `tf.summary.scalar` (the "scalars" plugin), written with the
    core `tf.summary.write` op, because `tf.summary.scalar` needs the
    `tensorboard` package, which the tensorflow 2.21 wheel no longer installs.
    """
    return tf.summary.write(tag, tf.constant(value, tf.float32), metadata=_scalar_metadata())


def read_metrics(path):
    """Rows of a metrics.csv as dicts of floats (`step` as int; a missing `skipped` is 0)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{"skipped": 0.0,
             **{k: (int(v) if k == "step" else float(v)) for k, v in row.items()}}
            for row in rows]


def _whole_rows(path):
    """`(header, rows)` of a CSV, without a row torn by a process that died while writing it.

    A torn row is the last line without its line end, or a row whose fields
    are missing or whose `step` does not parse; it is dropped with a warning.
    """
    text = path.read_text(errors="replace")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        logger.warning("%s: dropped its last row, torn by a process that stopped while writing "
                       "it: %r", path, lines[-1][:80])
        lines = lines[:-1]
    reader = csv.DictReader(lines)
    rows = []
    for row in reader:
        try:
            if None in row.values() or None in row:
                raise ValueError("wrong number of fields")
            int(float(row["step"]))
        except (KeyError, ValueError, TypeError):
            logger.warning("%s: dropped an incomplete row: %s", path, dict(row))
            continue
        rows.append(row)
    return reader.fieldnames, rows


def truncate_csv(path, last_step, columns, restval=""):
    """Drop the rows of a step-keyed CSV logged after `last_step` (a resume starts there).

    The file is rewritten atomically, with `columns` as its header (a column
    the file lacks gets `restval`); a torn last row is dropped with a warning;
    a missing file is left missing.
    """
    path = Path(path)
    if not path.is_file():
        return
    _, rows = _whole_rows(path)
    rows = [r for r in rows if int(float(r["step"])) <= last_step]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval=restval, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def truncate_metrics(path, last_step):
    """Drop metrics.csv rows after `last_step` (logged after the checkpoint a resume starts from)."""
    truncate_csv(path, last_step, CSV_COLUMNS, restval=0)
    return read_metrics(path)


class StepCsv:
    """A CSV of rows keyed by `step`, each row appended and on disk as soon as it is written.

    Args:
        path: the file (created with a header when missing or empty).
        columns: the column names.
        keep_until: on resume, the step to keep rows up to; later rows are dropped first.
    """

    def __init__(self, path, columns, *, keep_until=None):
        self.path = Path(path)
        self.columns = tuple(columns)
        if keep_until is not None:
            truncate_csv(self.path, keep_until, self.columns)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writeheader()

    def write(self, row):
        """Append one row (a dict with the columns as keys)."""
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow(row)


class TrainingLogger:
    """Averages the per-step metrics and writes them every `log_every` steps.

    Each log row holds the mean loss and accuracy over the steps since the
    previous row, the learning rate, the examples per second over that window,
    the wall time since the run (or its resume) started and the steps of the
    window skipped as non-finite (their loss is left out of the mean; a window
    of skipped steps only has a NaN loss). Rows go to
    `metrics.csv` (appended and flushed, so a crash loses nothing logged) and
    to TensorBoard scalars; a `keras.utils.Progbar` shows the same on screen.

    Args:
        run_dir: the run directory.
        total_steps: steps of the whole run (the progress bar's target).
        start_step: step the run starts or resumes from.
        global_batch: examples per step.
        log_every: steps per log row.
        verbose: show the progress bar.
    """

    def __init__(self, run_dir, *, total_steps, start_step, global_batch, log_every, verbose=True):
        run_dir = Path(run_dir)
        self.csv_path = RunDir(run_dir).metrics
        new = not self.csv_path.is_file() or self.csv_path.stat().st_size == 0
        self._file = self.csv_path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=CSV_COLUMNS)
        if new:
            self._writer.writeheader()
            self._file.flush()
        self._summary = tf.summary.create_file_writer(str(RunDir(run_dir).tensorboard))
        self.global_batch = global_batch
        self.log_every = log_every
        self.total_steps = total_steps
        self.start = time.perf_counter()
        self._window_start = self.start
        self._window = []
        self._skipped = 0
        self.skipped_total = 0
        previous = read_metrics(self.csv_path)
        self.last = previous[-1] if previous else None
        finite = [r for r in previous if math.isfinite(r["loss"])]
        # The last row with a loss: a window of skipped steps only has none.
        self.last_finite = finite[-1] if finite else None
        self.progbar = None
        if verbose:
            self.progbar = keras.utils.Progbar(
                total_steps, stateful_metrics=["loss", "accuracy", "ex/s"], unit_name="step")
            self.progbar.update(start_step)

    def step(self, step, metrics, lr, *, skipped=False):
        """Record finished step `step` (or that it was `skipped`); log when it is due."""
        if skipped:
            self._skipped += 1
            self.skipped_total += 1
        else:
            self._window.append((float(metrics["loss"]), float(metrics["accuracy"])))
        if step % self.log_every == 0 or step == self.total_steps:
            self.flush(step, lr)

    def flush(self, step, lr):
        """Write a row for the steps recorded since the last one (if any)."""
        if not self._window and not self._skipped:
            return self.last
        now = time.perf_counter()
        n = len(self._window)
        steps = n + self._skipped
        row = {
            "step": step,
            "loss": math.fsum(x[0] for x in self._window) / n if n else math.nan,
            "accuracy": math.fsum(x[1] for x in self._window) / n if n else math.nan,
            "lr": lr,
            "examples_per_sec": steps * self.global_batch / max(now - self._window_start, 1e-9),
            "wall": now - self.start,
            "skipped": self._skipped,
        }
        self._writer.writerow(row)
        self._file.flush()
        with self._summary.as_default(step=step):
            for tag, key in (("loss", "loss"), ("accuracy", "accuracy"), ("learning_rate", "lr"),
                             ("examples_per_sec", "examples_per_sec")):
                write_scalar(tag, row[key])
        self._summary.flush()
        if self.progbar is not None:
            self.progbar.update(step, values=[("loss", row["loss"]), ("accuracy", row["accuracy"]),
                                              ("ex/s", row["examples_per_sec"])])
        self._window = []
        self._skipped = 0
        self._window_start = now
        self.last = row
        if n:
            self.last_finite = row
        return row

    def close(self):
        self._file.close()
        self._summary.close()
