"""What fits: the peak resident memory of training steps (the `memory` row of the speed suite).

Each measurement runs in a fresh process (`ssl3d_keras.benchmark.speed.run_isolated`
with kind `"memory"`), so its peak is its own:

    python -m ssl3d_keras.benchmark.speed memory '{"task": "rotation", "size": 128, "batch_size": 2, "remat": true}'

Example:

>>> from ssl3d_keras.benchmark.memory import current_rss_mb
>>> current_rss_mb() > 0
True
"""

import resource
import statistics
import time

__all__ = ["current_rss_mb", "peak_rss_mb", "proc_status_mb", "reset_peak_rss", "training_memory"]


def proc_status_mb(key):
    """A memory line of `/proc/self/status` (`VmRSS`, `VmHWM`, ...) in MiB; None where missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def current_rss_mb():
    """Resident memory of this process now, in MiB (`VmRSS`; None where /proc is missing)."""
    return proc_status_mb("VmRSS")


def peak_rss_mb():
    """Peak resident memory of this process so far, in MiB.

    Linux's `VmHWM` belongs to this program alone; `ru_maxrss` (the fallback
    elsewhere) survives `exec` and so also counts the parent it was forked from.
    """
    peak = proc_status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if peak is None else peak


def reset_peak_rss():
    """Restart the kernel's peak-RSS count (`VmHWM`) from now; False where Linux does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def training_memory(*, task="rotation", size=128, batch_size=1, remat=False,
                    precision="float32", encoder=None, steps=3, task_config=None):
    """Peak memory of training steps of a task at one input size, batch and remat setting.

    Run it alone in a process (`run_isolated("memory", ...)`): the process
    peak is then what a run of these settings needs. The kernel's peak count
    restarts once the model is built, so that peak is the larger of
    `build_peak_rss_mb` and the `peak_rss_mb` that `run_isolated` adds.

    Args:
        task, size, batch_size: the task, input edge (`size`^3) and batch.
        remat: the encoder's `remat` setting.
        precision: as `ssl3d_keras.benchmark.train.measure_training`.
        encoder: `UNetEncoder` arguments; None = the paper encoder.
        steps: training steps (the first traces the step).
        task_config: keyword arguments of the task.

    Returns:
        dict with the settings; `build_peak_rss_mb`, the process peak while
        building the model and its batch; `baseline_rss_mb`, the resident
        memory once built; `steps_peak_mb`, the peak of the training steps
        above that baseline (the part that grows with batch and input size;
        None where Linux's peak count cannot be restarted); the
        `median_step_sec` of the steps after the first.
    """
    from ssl3d_keras.benchmark.train import build_training_step

    encoder = {**({} if encoder is None else encoder), "remat": bool(remat)}
    _, step, batch = build_training_step(task=task, size=size, batch_size=batch_size,
                                         precision=precision, encoder=encoder,
                                         task_config=task_config, total_steps=steps)
    build_peak = proc_status_mb("VmHWM")
    baseline = current_rss_mb()
    restarted = reset_peak_rss()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        float(step(batch)["loss"])
        times.append(time.perf_counter() - started)
    steps_peak = proc_status_mb("VmHWM") if restarted else None
    return {"task": task, "size": size, "batch_size": batch_size, "remat": bool(remat),
            "precision": precision, "encoder": encoder, "build_peak_rss_mb": build_peak,
            "baseline_rss_mb": baseline,
            "steps_peak_mb": None if steps_peak is None or baseline is None
            else steps_peak - baseline,
            "median_step_sec": statistics.median(times[1:] or times)}
