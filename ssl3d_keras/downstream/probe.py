"""The downstream probe of a pretraining run: a short frozen-encoder fit, scored by test Dice.

Every `monitor.every` steps `ssl3d_keras.training.monitor.PretrainMonitor`
calls the probe with the current encoder. The probe saves a copy of it as a
preset, fine-tunes a fresh U-Net decoder on it with the `frozen` schedule (the
linear-probe style transfer test) for `monitor.probe_steps` on a small labelled
set, and returns the mean foreground Dice on that set's test cases. The
pretraining weights are never touched. The labelled set is prepared once, in
`RUN/probe/`, and reused by every later probe (and after a resume).

Example:

>>> from ssl3d_keras.downstream.probe import pretrain_with_probe
>>> summary = pretrain_with_probe(                                  # doctest: +SKIP
...     {"task": "rotation", "monitor": {"every": 100, "probe": True}}, "runs/rot")
"""

import shutil
import tempfile
from pathlib import Path

__all__ = ["probe_encoder", "pretrain_with_probe"]


def probe_encoder(encoder, monitor, run_dir):
    """Test Dice of a frozen copy of `encoder` under a freshly fitted U-Net decoder.

    Args:
        encoder: the encoder being pretrained (a `PyramidEncoder`); it is saved
            as a preset and the copy is fine-tuned, never the encoder itself.
        monitor: the run's `MonitorConfig` (`probe_data`, `probe_cases`,
            `probe_steps`, `probe_patch_size`).
        run_dir: the pretraining run directory (the probe data lives in `RUN/probe/`).

    Returns:
        float, the mean over test cases of the mean foreground Dice.
    """
    from ssl3d_keras.config import to_dict
    from ssl3d_keras.downstream.config import FinetuneData
    from ssl3d_keras.downstream.dataset import resolve_dataset
    from ssl3d_keras.downstream.finetune import finetune
    from ssl3d_keras.export.preset import save_preset

    run_dir = Path(run_dir)
    data = FinetuneData()
    if monitor.probe_data is not None:
        data.path = str(monitor.probe_data)
    else:
        data.phantoms.n = int(monitor.probe_cases)
        data.phantoms.channels = int(encoder.inputs[0].shape[-1])
    resolve_dataset(data, run_dir / "probe", progress=False)
    work = Path(tempfile.mkdtemp(prefix=".probe-", dir=run_dir))
    try:
        save_preset(encoder, work / "preset")
        steps = int(monitor.probe_steps)
        summary = finetune({
            "encoder": str(work / "preset"), "schedule": "frozen", "steps": steps,
            "batch_size": 4, "patch_size": int(monitor.probe_patch_size),
            "checkpoint_every": steps, "log_every": steps,
            "split": {"validation_fraction": 0.0, "test_fraction": 0.3},
            "evaluation": {"validate_every": 0, "write_predictions": False},
            "data": to_dict(data)}, work / "run", verbose=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return float(summary["test"]["dice_mean"]["mean"])


def pretrain_with_probe(config, out_dir, *, resume=False, verbose=True):
    """`ssl3d_keras.training.pretrain` that runs the probe `config.monitor` asks for.

    Takes the arguments of `pretrain` and returns its summary.
    """
    from ssl3d_keras.training import pretrain

    return pretrain(config, out_dir, resume=resume, verbose=verbose, probe=probe_encoder)
