"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1, each its own process and TF_CONFIG."""

import functools
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.data.pipeline import make_pipeline
from ssl3d_keras.data.volumes import open_volumes
from ssl3d_keras.training import load_run
from ssl3d_keras.training import run as run_lib
from ssl3d_keras.training.logging import read_metrics
from ssl3d_keras.training.loop import _seed_weights, make_train_step
from ssl3d_keras.training.optim import make_optimizer
from ssl3d_keras.training.strategy import worker_role

pytestmark = pytest.mark.subprocess

# No BatchNorm and no dropout: per-replica batch statistics and dropout masks
# legitimately differ from one device's; everything else must match. CPC, so the
# InfoNCE negatives must be gathered from the other worker.
CONFIG = {"task": "cpc", "steps": 3, "batch_size": 4, "log_every": 1, "checkpoint_every": 2,
          "task_config": {"grid": 2, "code_size": 8, "context_units": 8},
          "encoder": {"depth": 1, "base_filters": 2, "norm": "none", "dropout": 0.0},
          "data": {"input_size": 16, "phantoms": {"n": 4, "size": 16}},
          "optimizer": {"learning_rate": 0.01}, "strategy": "multiworker"}

WORKER = textwrap.dedent("""
    import json, sys
    from ssl3d_keras.training import pretrain
    out, config, resume = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "resume"
    summary = pretrain(config, out, resume=resume, verbose=False)
    print("RESULT" + json.dumps({"replicas": summary["replicas"], "steps": summary["steps"],
                                 "run_dir": summary["run_dir"]}))
""")


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_workers(out, config, resume=False):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(out), json.dumps(config),
             "resume" if resume else "new"], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        line = [x for x in stdout.splitlines() if x.startswith("RESULT")][0]
        results.append(json.loads(line[len("RESULT"):]))
    return results


def _weights(run_dir):
    task, _ = load_run(run_dir)
    return [w.numpy() for w in task.weights]


def _one_process_on_the_global_batches(config, out):
    """Train on one device on what the two workers' pipelines feed together, step by step."""
    resolved = run_lib.resolve_config(dict(config, strategy="default"), out, verbose=False)
    _seed_weights(resolved.seed)
    task = run_lib.build_task(resolved)
    optimizer = make_optimizer(resolved.optimizer, resolved.steps, "float32")
    optimizer.build(task.trainable_variables)
    step = make_train_step(task, optimizer, tf.distribute.get_strategy())
    data = resolved.data
    phantoms = {"n": data.phantoms.n, "size": data.phantoms.size,
                "channels": data.phantoms.channels, "seed": data.phantoms.seed}
    pipelines = []
    for index in range(2):  # what each worker's dataset_fn builds
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index,
                                             num_replicas_in_sync=2)
        volumes = open_volumes(None, phantoms=phantoms, input_context=context)
        pipelines.append(iter(make_pipeline(
            volumes, functools.partial(task.transform, training=True),
            batch_size=resolved.batch_size // 2, seed=resolved.seed,
            crop_size=(data.input_size,) * 3, shuffle_volumes=data.shuffle_volumes,
            cache=run_lib.resolve_cache(resolved), input_context=context)))
    losses = []
    for _ in range(resolved.steps):
        first, second = next(pipelines[0]), next(pipelines[1])
        batch = tf.nest.map_structure(lambda a, b: tf.concat([a, b], 0), first, second)
        losses.append(float(step(batch)["loss"]))
    return losses, [w.numpy() for w in task.weights]


def test_two_loopback_workers_train_as_one_process_on_the_global_batch(tmp_path):
    out = tmp_path / "run"
    chief, other = _run_workers(out, CONFIG)
    assert chief["replicas"] == other["replicas"] == 2
    assert chief["run_dir"] == str(out) and other["run_dir"] == str(out / "workers" / "worker-1")
    # The chief alone writes the run folder; the other worker keeps its own copy.
    assert {p.name for p in out.iterdir()} - {"run.lock"} == {
        "checkpoints", "config.json", "metrics.csv", "summary.json", "tensorboard", "workers"}
    assert [p.name for p in (out / "workers").iterdir()] == ["worker-1"]
    for a, b in zip(_weights(out), _weights(other["run_dir"]), strict=True):
        np.testing.assert_array_equal(a, b)

    losses, weights = _one_process_on_the_global_batches(CONFIG, tmp_path / "reference")
    logged = [row["loss"] for row in read_metrics(out / "metrics.csv")]
    np.testing.assert_allclose(logged, losses, rtol=1e-5)
    for got, want in zip(_weights(out), weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_multiworker_run_resumes_to_the_uninterrupted_result(tmp_path):
    whole = tmp_path / "whole"
    _run_workers(whole, dict(CONFIG, steps=4))
    part = tmp_path / "part"
    _run_workers(part, dict(CONFIG, steps=2))
    resumed = _run_workers(part, dict(CONFIG, steps=4), resume=True)
    assert [r["steps"] for r in resumed] == [4, 4]
    for a, b in zip(_weights(whole), _weights(part), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert [r["step"] for r in read_metrics(part / "metrics.csv")] == [1, 2, 3, 4]


@pytest.mark.slow
def test_workers_that_saved_different_steps_refuse_to_resume(tmp_path):
    out = tmp_path / "run"
    _run_workers(out, dict(CONFIG, steps=2, checkpoint_every=1))
    for path in (out / "workers" / "worker-1" / "checkpoints").glob("ckpt-2*"):
        path.unlink()  # as if worker-1 was killed before its last save
    (out / "workers" / "worker-1" / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
    with pytest.raises(AssertionError) as failed:
        _run_workers(out, dict(CONFIG, steps=3, checkpoint_every=1), resume=True)
    assert "restored different steps (1 to 2)" in str(failed.value), str(failed.value)[-2000:]


def test_worker_roles_follow_tensorflows_convention(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert worker_role() == (True, "chief")
    cluster = {"worker": ["a:1", "b:2"]}
    for index, role in ((0, (True, "chief")), (1, (False, "worker-1"))):
        monkeypatch.setenv("TF_CONFIG", json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        assert worker_role() == role
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"chief": ["c:0"], **cluster}, "task": {"type": "worker", "index": 0}}))
    assert worker_role() == (False, "worker-0")
