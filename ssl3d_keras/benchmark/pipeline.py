"""Throughput of the data side on this machine: phantoms, shards and the tf.data pipeline.

Each figure is the median of `repeats` timed runs after an untimed warm-up,
so one-off costs (tracing, imports, file-system caches) are left out.
"""

import os
import statistics
import tempfile
import time

import tensorflow as tf

from ssl3d_keras.data.phantoms import make_phantom
from ssl3d_keras.data.pipeline import make_pipeline, phantom_volumes, shard_volumes
from ssl3d_keras.data.shards import MANIFEST_FORMAT, ShardWriter, write_manifest


def _median_seconds(run, repeats):
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _drain(dataset):
    for _ in dataset:
        pass


def _rate(count, unit, repeats, run):
    median, times = _median_seconds(run, repeats)
    return {f"{unit}_per_sec": count / median, "median_sec": median, "count": count,
            "times_sec": times}


def _write_shards(out_dir, n_volumes, size, channels, seed, examples_per_shard=4):
    with ShardWriter(out_dir, examples_per_shard=examples_per_shard) as writer:
        for i in range(n_volumes):
            image, label = make_phantom((seed, i), size=size, channels=channels)
            writer.write(f"phantom_{i:03d}", image, label)
    write_manifest(out_dir, {
        "format": MANIFEST_FORMAT, "dim": 3, "channels": channels, "channel_names": None,
        "label_names": None, "shards": writer.shards, "cases": [], "skipped": [],
        "preprocessing": {}, "created_by": {"tensorflow": tf.__version__},
    })


def measure_pipeline(*, n_volumes=8, size=48, crop=32, batch_size=4, steps=10, seed=0,
                     channels=1, repeats=3):
    """Measure volumes/s of the sources and crops/s of `make_pipeline` here.

    Args:
        n_volumes: int, phantoms generated (and written to temporary shards).
        size: int, phantom edge length (`size`^3 volumes).
        crop: int, edge of the random crops the pipeline takes.
        batch_size: int, crops per batch.
        steps: int, batches drawn per timed pipeline run.
        seed: int, seed of phantoms and pipeline.
        channels: int, phantom channels. Default 1.
        repeats: int, timed repetitions (the median is reported). Default 3.

    Returns:
        dict: `settings`; `phantom_generation`, `shard_write`, `shard_read`
        (each with `volumes_per_sec`); `pipeline_phantoms` (generation in the
        loop), `pipeline_phantoms_cached` and `pipeline_shards` (each with
        `crops_per_sec`); every entry also has `median_sec` and `times_sec`.
        The pipelines run with `transform=None` (crop only), so the figures
        are the data side's ceiling, before any task's own transform.
    """
    settings = {"n_volumes": n_volumes, "size": size, "crop": crop, "batch_size": batch_size,
                "steps": steps, "seed": seed, "channels": channels, "repeats": repeats,
                "cpu_count": os.cpu_count(), "tensorflow": tf.__version__}
    results = {"settings": settings}
    phantoms = phantom_volumes(n_volumes, size=size, channels=channels, seed=seed)
    results["phantom_generation"] = _rate(n_volumes, "volumes", repeats, lambda: _drain(phantoms))

    crops = steps * batch_size

    def pipeline_rate(volumes, cache=False):
        dataset = make_pipeline(volumes, None, batch_size=batch_size, seed=seed, crop_size=crop,
                                cache=cache)
        return _rate(crops, "crops", repeats, lambda: _drain(dataset.take(steps)))

    results["pipeline_phantoms"] = pipeline_rate(phantoms)
    # The warm-up run fills the cache only if it reads every volume once.
    cached_steps = max(steps, -(-n_volumes // batch_size) + 1)
    cached = make_pipeline(phantoms, None, batch_size=batch_size, seed=seed, crop_size=crop,
                           cache=True)
    _drain(cached.take(cached_steps))
    results["pipeline_phantoms_cached"] = _rate(crops, "crops", repeats,
                                                lambda: _drain(cached.take(steps)))

    with tempfile.TemporaryDirectory(prefix="ssl3d-bench-") as tmp:
        counter = iter(range(repeats + 1))
        results["shard_write"] = _rate(
            n_volumes, "volumes", repeats,
            lambda: _write_shards(os.path.join(tmp, f"w{next(counter)}"), n_volumes, size,
                                  channels, seed))
        shards = shard_volumes(os.path.join(tmp, "w0"))
        results["shard_read"] = _rate(n_volumes, "volumes", repeats, lambda: _drain(shards))
        results["pipeline_shards"] = pipeline_rate(shards)
    return results


def format_pipeline_results(results):
    """A plain-text table of `measure_pipeline` results."""
    s = results["settings"]
    lines = [f"pipeline benchmark: {s['n_volumes']} volumes of {s['size']}^3 x {s['channels']} "
             f"channel(s), crops {s['crop']}^3, batch {s['batch_size']}, {s['steps']} steps, "
             f"median of {s['repeats']} ({s['cpu_count']} CPUs, TF {s['tensorflow']})",
             f"{'stage':<28} {'rate':>12} {'unit':<10} {'median s':>9}"]
    order = ("phantom_generation", "shard_write", "shard_read", "pipeline_phantoms",
             "pipeline_phantoms_cached", "pipeline_shards")
    for name in order:
        row = results[name]
        unit = "volumes/s" if "volumes_per_sec" in row else "crops/s"
        rate = row.get("volumes_per_sec", row.get("crops_per_sec"))
        lines.append(f"{name:<28} {rate:>12.1f} {unit:<10} {row['median_sec']:>9.3f}")
    return "\n".join(lines)
