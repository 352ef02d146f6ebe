"""Speed of a training step on this machine, per precision and XLA setting.

The step is the one the pretraining loop runs (`make_train_step`), on one
fixed batch made by the task's own `transform`, so only the model's forward,
backward and optimiser update are timed (no input pipeline).

Example:

>>> from ssl3d_keras.benchmark.train import measure_training
>>> measure_training(task="rotation", size=32, batch_size=2, steps=10)  # doctest: +SKIP
{'median_step_sec': ..., 'examples_per_sec': ..., ...}
"""

import random
import statistics
import time

import tensorflow as tf

from ssl3d_keras.models.dtype import dtype_policy
from ssl3d_keras.training.config import QUICK_ENCODER, OptimizerConfig
from ssl3d_keras.training.loop import make_train_step
from ssl3d_keras.training.optim import make_optimizer
from ssl3d_keras.training.strategy import resolve_precision

# The reduced encoder of the quick demonstration run (`ssl3d pretrain TASK`).
BENCHMARK_ENCODER = dict(QUICK_ENCODER)


def _batch(task, batch_size, seed=0):
    volumes = tf.random.stateless_normal((batch_size, *task.volume_shape), seed=[seed, 0])
    examples = [task.transform(volumes[i], tf.constant([seed, i], tf.int32), training=True)
                for i in range(batch_size)]
    return tf.nest.map_structure(lambda *xs: tf.stack(xs), *examples)


def build_training_step(*, task="rotation", size=32, batch_size=2, precision="float32",
                        jit_compile=False, encoder=None, task_config=None, dim=3, channels=1,
                        total_steps=100):
    """The pretraining loop's step for a task, with one fixed batch to feed it.

    Args: as `measure_training`; `total_steps` sizes the optimiser's schedule.

    Returns:
        `(task_model, step, batch)`: `step(batch)` runs one optimisation step
        (forward, backward, update) and returns a dict with `loss`.
    """
    from ssl3d_keras import tasks

    encoder = dict(BENCHMARK_ENCODER if encoder is None else encoder)
    precision = resolve_precision(precision, encoder=encoder)
    random.seed(0)  # initial weights, without touching TensorFlow's global seed
    with dtype_policy(precision):
        model = tasks.get(task, input_shape=(size,) * dim + (channels,), encoder=encoder,
                          **(task_config or {})).build_from_example()
        optimizer = make_optimizer(OptimizerConfig(), total_steps, precision)
    strategy = tf.distribute.get_strategy()
    step = make_train_step(model, optimizer, strategy, jit_compile=jit_compile)
    return model, step, _batch(model, batch_size)


def measure_training(*, task="rotation", size=32, batch_size=2, steps=10, precision="float32",
                     jit_compile=False, encoder=None, task_config=None, dim=3, channels=1,
                     warmup=2):
    """Time `steps` training steps of a task on one fixed batch.

    Args:
        task: name of the proxy task.
        size: edge of the input volume (`size`^dim voxels).
        batch_size: examples per step.
        steps: timed steps (after `warmup` untimed ones, which include tracing).
        precision: "float32", "mixed_float16", "mixed_bfloat16" or "auto".
        jit_compile: XLA-compile the step.
        encoder: dict of `UNetEncoder` arguments (default: the quick run's
            reduced encoder, depth 2, base 8).
        task_config: keyword arguments of the task.
        dim: 3 or 2.
        channels: input channels.
        warmup: untimed steps first.

    Returns:
        dict with `median_step_sec`, `examples_per_sec` (batch / median step
        time), `mean_step_sec`, `min_step_sec`, `first_step_sec` (tracing and
        compilation), the parameter count and the settings.
    """
    encoder = dict(BENCHMARK_ENCODER if encoder is None else encoder)
    precision = resolve_precision(precision, encoder=encoder)
    model, step, batch = build_training_step(
        task=task, size=size, batch_size=batch_size, precision=precision,
        jit_compile=jit_compile, encoder=encoder, task_config=task_config, dim=dim,
        channels=channels, total_steps=steps + warmup)

    started = time.perf_counter()
    float(step(batch)["loss"])
    first = time.perf_counter() - started
    for _ in range(max(warmup - 1, 0)):
        float(step(batch)["loss"])
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        float(step(batch)["loss"])
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {
        "task": task,
        "size": size,
        "dim": dim,
        "batch_size": batch_size,
        "precision": precision,
        "jit_compile": bool(jit_compile),
        "encoder": encoder,
        "parameters": int(model.count_params()),
        "steps": steps,
        "first_step_sec": first,
        "median_step_sec": median,
        "mean_step_sec": statistics.fmean(times),
        "min_step_sec": min(times),
        "examples_per_sec": batch_size / median,
    }


def compare_training(*, precisions=("float32", "mixed_bfloat16"), jit=(False, True), **kwargs):
    """`measure_training` for each precision x jit setting; list of result dicts.

    Each result also has `speedup`: its examples/s over the first setting's.
    """
    results = [measure_training(precision=p, jit_compile=j, **kwargs)
               for p in precisions for j in jit]
    base = results[0]["examples_per_sec"]
    for result in results:
        result["speedup"] = result["examples_per_sec"] / base
    return results


def format_results(results):
    """A plain-text table of `measure_training` results."""
    lines = [f"{'task':<9} {'size':>4} {'batch':>5} {'precision':<15} {'jit':<5} "
             f"{'step s (median)':>15} {'examples/s':>10} {'speed-up':>8} {'first step s':>12}"]
    for r in results:
        speedup = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        lines.append(f"{r['task']:<9} {r['size']:>4} {r['batch_size']:>5} {r['precision']:<15} "
                     f"{str(r['jit_compile']):<5} {r['median_step_sec']:>15.4f} "
                     f"{r['examples_per_sec']:>10.2f} {speedup:>8} {r['first_step_sec']:>12.2f}")
    return "\n".join(lines)
