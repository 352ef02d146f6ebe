"""float32 against mixed precision, per task and encoder (the `precision` row of the speed suite).

The measurement behind `--precision auto` (`training.strategy.resolve_precision`)
and docs/PERFORMANCE.md, "Precision and memory":

    python -m ssl3d_keras.benchmark.speed precision '{"task": "rotation", "size": 64, "batch_size": 4}'

Example:

>>> from ssl3d_keras.benchmark.precision import compare_precisions
>>> compare_precisions(task="rotation", size=32, batch_size=4)  # doctest: +SKIP
{'task': 'rotation', ..., 'float32': {...}, 'mixed_bfloat16': {..., 'speedup': ...}}
"""

import statistics
import time

__all__ = ["compare_precisions"]


def compare_precisions(*, task="rotation", size=64, batch_size=4, encoder=None,
                       precisions=("float32", "mixed_bfloat16"), rounds=5, steps=3,
                       task_config=None):
    """Training steps of one task at each precision, timed in turns in one process.

    Each round times `steps` steps at every precision in turn, so a drifting
    machine load affects all of them alike; medians are over every timed step.

    Args:
        task, size, batch_size: the task, input edge and batch.
        encoder: `UNetEncoder` arguments; None = the paper encoder.
        precisions: the precisions to time; the first is the baseline.
        rounds, steps: timed rounds, and steps per round and precision.
        task_config: keyword arguments of the task.

    Returns:
        dict with the settings and, per precision, `median_step_sec`,
        `examples_per_sec`, `speedup` (the first precision's median step
        time over this one's) and the first and last `loss`.
    """
    from ssl3d_keras.benchmark.train import build_training_step

    encoder = {} if encoder is None else encoder
    timed, losses = {}, {}
    for precision in precisions:
        _, step, batch = build_training_step(
            task=task, size=size, batch_size=batch_size, precision=precision, encoder=encoder,
            task_config=task_config, total_steps=rounds * steps + 2)
        timed[precision] = (lambda step=step, batch=batch: float(step(batch)["loss"]))
        losses[precision] = [timed[precision](), timed[precision]()]  # tracing, untimed
    times = {name: [] for name in timed}
    for _ in range(rounds):
        for name, run in timed.items():
            for _ in range(steps):
                started = time.perf_counter()
                losses[name].append(run())
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times[precisions[0]])
    results = {}
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {"median_step_sec": median, "examples_per_sec": batch_size / median,
                         "speedup": base / median, "steps": len(values),
                         "first_loss": losses[name][0], "last_loss": losses[name][-1]}
    return {"task": task, "size": size, "batch_size": batch_size, "encoder": encoder,
            **results}
