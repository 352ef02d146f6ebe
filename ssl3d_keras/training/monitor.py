"""Is the encoder getting better? Held-out proxy scores and a downstream probe during pretraining.

Proxy accuracy on the training stream says little about transfer (rotation
reaches 0.98 on phantoms), so a run can also, every `monitor.every` steps:

- score the proxy task on a fixed set of held-out examples (volumes the run
  never trains on: phantoms seeded apart, or `monitor.validation_data`), with
  fixed seeds, so the numbers are comparable from one check to the next;
- probe the encoder downstream: a copy of it is frozen under a fresh U-Net
  decoder, fitted for `monitor.probe_steps` on a small labelled set, and its
  test Dice is logged. The probe lives in the downstream room
  (`ssl3d_keras.downstream.probe`), which sits above training, so it is handed
  to `pretrain(..., probe=...)`; `ssl3d pretrain` and
  `ssl3d_keras.downstream.probe.pretrain_with_probe` do that.

Each check is a row of `monitor.csv` (step, val_loss, val_accuracy,
probe_dice) and TensorBoard scalars under `monitor/`. The checkpoint with the
best score (the probe's when it runs, else the held-out proxy accuracy) is
kept in `checkpoints/best/` with `best.json`, and `ssl3d export RUN --checkpoint
best` exports it.
"""

import math
from pathlib import Path

from ssl3d_keras.atomic import write_json_atomic
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.training.logging import StepCsv

__all__ = ["PretrainMonitor", "BEST_CHECKPOINT", "BEST_FILE"]

BEST_CHECKPOINT = "best"
BEST_FILE = "best.json"
MONITOR_FILE = "monitor.csv"
COLUMNS = ("step", "val_loss", "val_accuracy", "probe_dice")
# Held-out phantoms are drawn from this seed, never the training phantoms' seed.
_HELD_OUT_SEED_OFFSET = 7919


def _held_out_batches(config, task):
    """The fixed held-out examples as a list of numpy `(inputs, target)` batches, or []."""
    import functools

    from ssl3d_keras.data.pipeline import make_pipeline
    from ssl3d_keras.data.volumes import open_volumes

    monitor, data = config.monitor, config.data
    if monitor.validation_data is not None:
        volumes = open_volumes(monitor.validation_data, dim=data.dim,
                               slice_axis=data.slice_axis)
    elif data.path is None:
        phantoms = {"n": monitor.validation_volumes, "size": data.phantoms.size,
                    "channels": data.phantoms.channels,
                    "seed": data.phantoms.seed + _HELD_OUT_SEED_OFFSET}
        volumes = open_volumes(None, dim=data.dim, phantoms=phantoms,
                               slice_axis=data.slice_axis)
    else:
        return []
    crop = None if data.input_size is None else (data.input_size,) * data.dim
    n = int(monitor.validation_examples)
    batch = min(int(config.batch_size), n)
    per_volume = max(1, math.ceil(n / max(1, int(volumes.cardinality()))))
    batches = make_pipeline(volumes, functools.partial(task.transform, training=True),
                            batch_size=batch, seed=config.seed + _HELD_OUT_SEED_OFFSET,
                            crop_size=crop, crops_per_volume=per_volume, shuffle_volumes=0,
                            repeat=False)
    return list(batches.take(max(1, n // batch)).as_numpy_iterator())


class PretrainMonitor:
    """Runs the checks of `config.monitor` during `pretrain` and keeps the best checkpoint.

    Args:
        config: the run's `PretrainConfig` (with a `monitor` table).
        task: the `ProxyTask` being trained.
        checkpoints: the run's `RunCheckpoints` (its checkpoint is written as
            `checkpoints/best`, with the step it was taken at).
        run_dir: the run directory.
        start_step: the step the run starts or resumes from; rows logged after
            it are dropped.
        probe: optional `probe(encoder, monitor_config, run_dir) -> float`
            (higher is better): `ssl3d_keras.downstream.probe.probe_encoder`.
    """

    def __init__(self, config, task, checkpoints, run_dir, *, start_step=0, probe=None):
        self.config = config.monitor
        self.total = int(config.steps)
        self.task = task
        self.checkpoints = checkpoints
        self.run_dir = Path(run_dir)
        self.held_out = _held_out_batches(config, task)
        self.best = self._read_best(start_step)
        self.log = StepCsv(self.run_dir / MONITOR_FILE, COLUMNS, keep_until=start_step)
        self.probe = probe

    @classmethod
    def create(cls, config, task, checkpoints, run_dir, *, start_step=0, probe=None):
        """A monitor, or None when `config.monitor.every` is 0.

        Raises:
            ConfigError: `monitor.probe` is set but no probe was given.
        """
        if not config.monitor.every:
            return None
        if not config.monitor.probe:
            probe = None
        elif probe is None:
            raise ConfigError("monitor.probe", "the downstream probe is run by "
                              "ssl3d_keras.downstream.probe.pretrain_with_probe (and by "
                              "`ssl3d pretrain`); training.pretrain alone has none. "
                              "Received: monitor.probe=True and no probe")
        return cls(config, task, checkpoints, run_dir, start_step=start_step, probe=probe)

    def _best_manager(self):
        import tensorflow as tf

        # Its own folder and index, so the run's manager never prunes or lists it.
        return tf.train.CheckpointManager(
            self.checkpoints.checkpoint, str(self.run_dir / "checkpoints" / BEST_CHECKPOINT),
            max_to_keep=1, checkpoint_name=BEST_CHECKPOINT)

    def due(self, step):
        """True when `step` is a check step."""
        return step % int(self.config.every) == 0 or step == self.total

    def _read_best(self, start_step):
        from ssl3d_keras.training.checkpoints import read_json

        path = self.run_dir / BEST_FILE
        if path.is_file():
            best = read_json(path)
            if int(best.get("step", 0)) <= start_step:
                return best
        return {"step": None, "score": -math.inf, "metric": None}

    def proxy_scores(self):
        """Mean proxy loss and accuracy over the held-out examples (NaN when there are none)."""
        if not self.held_out:
            return math.nan, math.nan
        losses, accuracies = [], []
        for inputs, target in self.held_out:
            loss, metrics = self.task.compute_loss_and_metrics(inputs, target, training=False)
            losses.append(float(loss))
            accuracies.append(float(metrics.get("accuracy", math.nan)))
        return sum(losses) / len(losses), sum(accuracies) / len(accuracies)

    def check(self, step):
        """Run the checks of `step`, log them, and keep the checkpoint if it is the best.

        Returns:
            dict of the row written.
        """
        from ssl3d_keras.training.logging import write_scalar

        val_loss, val_accuracy = self.proxy_scores()
        dice = (float(self.probe(self.task.encoder, self.config, self.run_dir))
                if self.probe is not None else math.nan)
        row = {"step": step, "val_loss": val_loss, "val_accuracy": val_accuracy,
               "probe_dice": dice}
        self.log.write(row)
        import tensorflow as tf

        writer = tf.summary.create_file_writer(str(self.run_dir / "tensorboard"))
        with writer.as_default(step=step):
            for key in COLUMNS[1:]:
                if not math.isnan(row[key]):
                    write_scalar(f"monitor/{key}", row[key])
        writer.close()
        metric = "probe_dice" if self.probe is not None else "val_accuracy"
        score = row[metric]
        if not math.isnan(score) and score > self.best["score"]:
            self.checkpoints.step.assign(step)
            prefix = self._best_manager().save(checkpoint_number=step)
            self.best = {"step": step, "score": score, "metric": metric, "checkpoint": prefix}
            write_json_atomic(self.run_dir / BEST_FILE, self.best)
        return row
