"""The performance suite behind `ssl3d benchmark speed`: what a step costs here, and why.

One run measures, on whatever machine it is on:

- the machine's float32 ceiling: a large matrix product in TensorFlow (GFLOP/s);
- the reference: the paper's encoder with the rotation head written directly in
  Keras 3 (`keras.Sequential` of the same layers, `train_on_batch`), timed in
  turns with our pretraining step in the same process, per precision;
- per task: model-only step time and examples/s on one in-memory batch, the
  FLOPs of a step counted from the traced graph's convolutions and matrix
  products, the achieved GFLOP/s and the model FLOP utilisation (achieved /
  ceiling); pipeline-only examples/s from prepared shards; the end-to-end rate
  through `training.pretrain`; the peak resident memory of each;
- scaling: one epoch of pretraining over 10, 100 and 1000 phantoms streamed from
  shards (time should grow linearly, memory stay flat);
- precision: float32 against mixed bfloat16 per task and encoder, timed in turns
  in one process (`benchmark.precision`);
- memory: the peak resident memory of training steps per task, input size,
  batch and `encoder.remat` setting (`benchmark.memory`), what fits before a run.

Every measurement but the interleaved comparison runs in a fresh Python process
(`python -m ssl3d_keras.benchmark.speed KIND JSON`), so its peak resident memory
is its own and no measurement warms another's caches. Times are medians of
timed steps after untimed warm-up steps; compare ratios within one run, since a
shared machine drifts between runs.

Example:

>>> from ssl3d_keras.benchmark.speed import conv_and_matmul_flops
>>> import keras, numpy as np
>>> model = keras.Sequential([keras.Input((8, 8, 8, 1)), keras.layers.Conv3D(4, 3, padding="same")])
>>> conv_and_matmul_flops(model, np.zeros((2, 8, 8, 8, 1), "float32")) == 2 * 2 * 8**3 * 4 * 27
True
"""

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from ssl3d_keras.benchmark.memory import peak_rss_mb, training_memory
from ssl3d_keras.benchmark.precision import compare_precisions

TASKS = ("rotation", "jigsaw", "rpl", "cpc", "exemplar")

# The authors' batch sizes (HealthML/self-supervised-3d-tasks configs/train/*_3d.json).
PAPER_BATCH = {"rotation": 4, "jigsaw": 8, "rpl": 32, "cpc": 1, "exemplar": 2}

# Smallest input edge at which the paper encoder (4 levels and a final pool, so
# 32 voxels per cell) runs each task: jigsaw and RPL cut a 3x3x3 grid whose patches
# are a cell less the jitter of 3 (105 // 3 - 3 = 32), CPC a 4x4x4 grid of 32^3 cells.
PAPER_MIN_SIZE = {"rotation": 32, "exemplar": 32, "jigsaw": 105, "rpl": 105, "cpc": 128}

# A training step costs about three forward passes (the backward pass computes
# gradients for activations and for weights, each about as costly as the forward).
TRAINING_FLOPS_PER_FORWARD = 3


# --- what the hardware can do -------------------------------------------------------------

def matmul_ceiling(n=4096, repeats=5):
    """float32 GFLOP/s of an `n x n` matrix product in TensorFlow (median of `repeats`)."""
    import tensorflow as tf

    a = tf.random.stateless_normal((n, n), seed=[0, 1])
    b = tf.random.stateless_normal((n, n), seed=[0, 2])
    product = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)))
    float(product(a, b))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        float(product(a, b))
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    return {"n": n, "median_sec": seconds, "gflops": 2 * n**3 / seconds / 1e9}


def conv_and_matmul_flops(model, inputs):
    """Forward FLOPs of `model(inputs)` counted from its traced graph.

    Every `Conv2D`/`Conv3D` op costs `2 * output elements * kernel elements
    per output channel` and every `MatMul`/`BatchMatMul` `2 * M * N * K`;
    normalisation, activations and pooling (a few FLOPs per element) are left
    out, as in the usual model-FLOPs convention.

    Args:
        model: a callable Keras model.
        inputs: a tensor or nest of tensors with static shapes.

    Returns:
        int, FLOPs of one forward pass over the whole batch.
    """
    import tensorflow as tf

    specs = tf.nest.map_structure(lambda x: tf.TensorSpec(np.shape(x), tf.as_dtype(x.dtype)),
                                  inputs)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(specs).graph
    total = 0
    for op in graph.get_operations():
        if op.type in ("Conv2D", "Conv3D"):
            kernel = op.inputs[1].shape.as_list()
            total += 2 * int(np.prod(op.outputs[0].shape.as_list())) * int(np.prod(kernel[:-1]))
        elif op.type == "MatMul":
            a, b = op.inputs[0].shape.as_list(), op.inputs[1].shape.as_list()
            m = a[1] if op.get_attr("transpose_a") else a[0]
            k = a[0] if op.get_attr("transpose_a") else a[1]
            n = b[0] if op.get_attr("transpose_b") else b[1]
            total += 2 * m * n * k
        elif op.type.startswith("BatchMatMul"):
            out = op.outputs[0].shape.as_list()
            a = op.inputs[0].shape.as_list()
            k = a[-2] if op.get_attr("adj_x") else a[-1]
            total += 2 * int(np.prod(out)) * k
    return int(total)


# --- the reference: the same model written directly in Keras --------------------------------

def reference_rotation_model(size, *, dim=3, channels=1, classes=10, filters=(16, 32, 64, 128),
                             bottleneck=256, dropout=0.5, head=(2048, 1024)):
    """The paper's encoder and rotation head as a plain `keras.Sequential`.

    The layers and their order are those of `UNetEncoder` (Conv -> ReLU ->
    BatchNorm, Dropout between a level's two blocks, MaxPool after each level
    and after the bottleneck) and of the rotation head (Flatten, then Dense ->
    ReLU -> BatchNorm -> Dropout per hidden layer, then the logits); compiled
    with Adam at the paper's learning rate and sparse cross-entropy.

    Args:
        size: input edge (`size`^dim voxels).

    Returns:
        A compiled `keras.Sequential`.
    """
    import keras

    conv = keras.layers.Conv3D if dim == 3 else keras.layers.Conv2D
    pool = keras.layers.MaxPooling3D if dim == 3 else keras.layers.MaxPooling2D
    layers = [keras.Input((size,) * dim + (channels,))]
    widths = [*filters, bottleneck]
    for width in widths:
        for block in (1, 2):
            if block == 2 and dropout:
                layers.append(keras.layers.Dropout(dropout))
            layers += [conv(width, 3, padding="same"), keras.layers.ReLU(),
                       keras.layers.BatchNormalization()]
        layers.append(pool(2))
    layers.append(keras.layers.Flatten())
    for units in head:
        layers += [keras.layers.Dense(units, activation="relu"), keras.layers.BatchNormalization(),
                   keras.layers.Dropout(dropout)]
    layers.append(keras.layers.Dense(classes))
    model = keras.Sequential(layers, name="bare_keras_rotation")
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def compare_with_reference(*, size=64, batch_size=4, precisions=("float32", "mixed_bfloat16"),
                           rounds=5, steps=3, encoder=None):
    """Our rotation step against the bare-Keras model, timed in turns in this process.

    Each round times `steps` steps of the reference, then `steps` of our step at
    every precision, so a drifting machine load affects all of them alike.

    Args:
        size, batch_size: input edge and batch.
        precisions: our precisions to time (the reference is float32).
        rounds, steps: timed rounds, and steps per round and model.
        encoder: `UNetEncoder` arguments of ours; None = the paper encoder.

    Returns:
        dict with `reference` and one entry per precision, each with
        `median_step_sec` and `examples_per_sec`; ours also have
        `rate_vs_reference` (our examples/s over the reference's).
    """
    import tensorflow as tf

    from ssl3d_keras.benchmark.train import build_training_step

    reference = reference_rotation_model(size)
    x = tf.random.stateless_normal((batch_size, size, size, size, 1), seed=[0, 0])
    y = tf.constant(np.arange(batch_size) % 10)
    timed = {"reference": lambda: reference.train_on_batch(x, y)}
    for precision in precisions:
        _, step, batch = build_training_step(task="rotation", size=size, batch_size=batch_size,
                                             precision=precision,
                                             encoder={} if encoder is None else encoder,
                                             total_steps=rounds * steps + 2)
        timed[precision] = (lambda step=step, batch=batch: float(step(batch)["loss"]))
    for run in timed.values():  # tracing and warm-up, untimed
        run()
        run()
    times = {name: [] for name in timed}
    for _ in range(rounds):
        for name, run in timed.items():
            for _ in range(steps):
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
    results = {}
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {"median_step_sec": median, "examples_per_sec": batch_size / median,
                         "steps": len(values)}
    for precision in precisions:
        results[precision]["rate_vs_reference"] = (
            results[precision]["examples_per_sec"] / results["reference"]["examples_per_sec"])
    return {"size": size, "batch_size": batch_size, **results}


def reference_memory(*, size=64, batch_size=4, steps=3):
    """Peak resident memory of the bare-Keras rotation model training alone."""
    import tensorflow as tf

    reference = reference_rotation_model(size)
    x = tf.random.stateless_normal((batch_size, size, size, size, 1), seed=[0, 0])
    y = tf.constant(np.arange(batch_size) % 10)
    times = []
    for _ in range(steps + 2):
        started = time.perf_counter()
        reference.train_on_batch(x, y)
        times.append(time.perf_counter() - started)
    median = statistics.median(times[2:])
    return {"size": size, "batch_size": batch_size, "median_step_sec": median,
            "examples_per_sec": batch_size / median}


# --- per task ----------------------------------------------------------------------------------

def model_step(*, task, size, batch_size, precision="float32", steps=5, encoder=None):
    """Model-only step of a task on one in-memory batch, with its FLOPs.

    Returns:
        the `measure_training` dict plus `forward_flops`, `step_flops`
        (`3 x forward`) and `achieved_gflops`.
    """
    from ssl3d_keras.benchmark.train import build_training_step, measure_training

    result = measure_training(task=task, size=size, batch_size=batch_size, steps=steps,
                              precision=precision, encoder=encoder)
    model, _, batch = build_training_step(task=task, size=size, batch_size=batch_size,
                                          precision="float32", encoder=encoder, total_steps=1)
    forward = conv_and_matmul_flops(model, batch[0])
    result["forward_flops"] = forward
    result["step_flops"] = TRAINING_FLOPS_PER_FORWARD * forward
    result["achieved_gflops"] = result["step_flops"] / result["median_step_sec"] / 1e9
    return result


def _prepared_phantoms(folder, n, size, seed=0):
    from ssl3d_keras.benchmark.pipeline import _write_shards

    _write_shards(folder, n, size, 1, seed)
    return folder


def pipeline_only(*, task, size, batch_size, steps=10, volumes=8, encoder=None):
    """Examples/s of a task's input pipeline from prepared shards, with no model.

    The phantoms are `size + 16` voxels wide, so the random crop has room to move.
    """
    from functools import partial

    from ssl3d_keras import tasks
    from ssl3d_keras.data.pipeline import make_pipeline
    from ssl3d_keras.data.volumes import open_volumes

    model = tasks.get(task, input_shape=(size,) * 3 + (1,),
                      encoder={"depth": 1, "base_filters": 1, "final_pool": False})
    with tempfile.TemporaryDirectory(prefix="ssl3d-speed-") as tmp:
        shards = _prepared_phantoms(os.path.join(tmp, "shards"), volumes, size + 16)
        dataset = make_pipeline(open_volumes(shards), partial(model.transform, training=True),
                                batch_size=batch_size, seed=0, crop_size=(size,) * 3, cache=True)
        iterator = iter(dataset.repeat())
        for _ in range(max(2, -(-volumes // batch_size))):  # fill the cache, untimed
            next(iterator)
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            next(iterator)
            times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {"task": task, "size": size, "batch_size": batch_size, "median_batch_sec": median,
            "examples_per_sec": batch_size / median}


def _pretrain_run(folder, *, task, size, batch_size, precision, encoder, steps=None, epochs=None,
                  volumes=8, volume_size=None, log_every=10, cache="auto"):
    from ssl3d_keras.training.loop import pretrain

    shards = _prepared_phantoms(os.path.join(folder, "shards"), volumes, volume_size or size + 16)
    config = {"task": task, "batch_size": batch_size, "precision": precision,
              "encoder": {} if encoder is None else encoder, "log_every": log_every,
              "checkpoint_every": 1_000_000,
              "data": {"path": shards, "input_size": size, "cache": cache}}
    config.update({"steps": steps} if steps else {"epochs": epochs})
    started = time.perf_counter()
    summary = pretrain(config, os.path.join(folder, "run"), verbose=False)
    wall = time.perf_counter() - started
    with open(os.path.join(folder, "run", "metrics.csv"), newline="") as f:
        rates = [float(row["examples_per_sec"]) for row in csv.DictReader(f)]
    return summary, wall, rates


def end_to_end(*, task, size, batch_size, precision="float32", steps=5, windows=3, encoder=None,
               volumes=8):
    """Examples/s of `training.pretrain` on prepared phantom shards.

    The run takes `windows x steps` steps and logs every `steps` (the loop's own
    examples/s over each window, with its usual logging cost); the median of the
    windows after the first (which holds tracing) is reported.
    """
    with tempfile.TemporaryDirectory(prefix="ssl3d-speed-") as tmp:
        _, wall, rates = _pretrain_run(tmp, task=task, size=size, batch_size=batch_size,
                                       precision=precision, encoder=encoder,
                                       steps=steps * windows, volumes=volumes, log_every=steps)
    rate = statistics.median(rates[1:] or rates)
    return {"task": task, "size": size, "batch_size": batch_size, "precision": precision,
            "steps": steps * windows, "examples_per_sec": rate,
            "median_step_sec": batch_size / rate, "wall_sec": wall}


def scaling(*, volumes, size=32, batch_size=8, encoder=None):
    """One epoch of rotation pretraining over `volumes` phantoms streamed from shards.

    Streamed: `data.cache = false`, the setting for data larger than memory.
    The epoch is `ceil(volumes / batch_size)` steps (one crop per volume);
    `epoch_sec` is the training loop's own wall time (tracing of the first
    step included, the same for every size), `total_sec` adds building the
    run and writing nothing else.
    """
    import math

    from ssl3d_keras.training.config import QUICK_ENCODER

    steps = math.ceil(volumes / batch_size)
    with tempfile.TemporaryDirectory(prefix="ssl3d-speed-") as tmp:
        summary, wall, _ = _pretrain_run(tmp, task="rotation", size=size, batch_size=batch_size,
                                         precision="float32",
                                         encoder=dict(QUICK_ENCODER) if encoder is None
                                         else encoder, steps=steps, volumes=volumes,
                                         volume_size=size, cache=False)
    epoch = float(summary["wall_time_sec"])
    return {"volumes": volumes, "size": size, "batch_size": batch_size, "steps": steps,
            "epoch_sec": epoch, "total_sec": wall, "sec_per_volume": epoch / volumes}




_WORKER_SCRIPT = """
import json, sys
from ssl3d_keras.training import pretrain
pretrain(json.loads(sys.argv[2]), sys.argv[1], verbose=False)
"""


def loopback_workers(*, workers=2, size=32, batch_size=8, steps=12, encoder=None):
    """Global examples/s of `workers` MultiWorkerMirroredStrategy processes on 127.0.0.1.

    On one machine the workers share its cores, so this cannot scale: set
    beside `workers=1` (the default strategy, one process) it shows what the
    collective communication costs. Each worker reads phantoms; the global
    batch is `batch_size`. The rate is the chief's, median of its logged
    windows after the first (tracing).
    """
    import socket

    from ssl3d_keras.training.config import QUICK_ENCODER

    config = {"task": "rotation", "steps": steps, "batch_size": batch_size,
              "log_every": max(1, steps // 4), "checkpoint_every": 1_000_000,
              "encoder": dict(QUICK_ENCODER) if encoder is None else encoder,
              "data": {"input_size": size, "phantoms": {"n": 8, "size": size + 16}},
              "strategy": "multiworker" if workers > 1 else "default"}
    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]}
    for s in sockets:
        s.close()
    with tempfile.TemporaryDirectory(prefix="ssl3d-speed-") as tmp:
        started = time.perf_counter()
        processes = []
        for index in range(workers):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            env.pop("TF_CONFIG", None)
            if workers > 1:
                env["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                               "task": {"type": "worker", "index": index}})
            processes.append(subprocess.Popen(
                [sys.executable, "-c", _WORKER_SCRIPT, os.path.join(tmp, "run"),
                 json.dumps(config)], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True))
        for process in processes:
            _, stderr = process.communicate(timeout=3600)
            if process.returncode != 0:
                raise RuntimeError((stderr.strip().splitlines() or ["worker failed"])[-1])
        wall = time.perf_counter() - started
        with open(os.path.join(tmp, "run", "metrics.csv"), newline="") as f:
            rates = [float(row["examples_per_sec"]) for row in csv.DictReader(f)]
    rate = statistics.median(rates[1:] or rates)
    return {"workers": workers, "size": size, "batch_size": batch_size, "steps": steps,
            "examples_per_sec": rate, "wall_sec": wall}


ROWS = {
    "ceiling": matmul_ceiling,
    "reference_memory": reference_memory,
    "compare": compare_with_reference,
    "model": model_step,
    "pipeline": pipeline_only,
    "end_to_end": end_to_end,
    "scaling": scaling,
    "precision": compare_precisions,
    "memory": training_memory,
    "workers": loopback_workers,
}


def run_isolated(kind, timeout=3600, **kwargs):
    """Run one measurement of `ROWS` in a fresh Python process.

    Returns:
        its result dict, with `peak_rss_mb` of that process; or a dict with
        `error` (the last line the process printed) when it failed.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "ssl3d_keras.benchmark.speed", kind, json.dumps(kwargs)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**kwargs, "kind": kind, "error": f"timed out after {timeout} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {**kwargs, "kind": kind, "error": tail}
    return {"kind": kind, **json.loads(lines[-1])}


def _main(argv):
    kind, kwargs = argv[0], json.loads(argv[1])
    result = ROWS[kind](**kwargs)
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    _main(sys.argv[1:])
