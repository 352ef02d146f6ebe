"""Strategy choice, and the multi-replica step on two logical CPU devices."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.training.strategy import (
    make_strategy,
    resolve_jit_compile,
    resolve_precision,
    strategy_name,
)


def test_auto_choices_on_this_machine(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    gpus = len(tf.config.list_physical_devices("GPU"))
    assert strategy_name(make_strategy("auto")) == ("mirrored" if gpus > 1 else "default")
    assert resolve_jit_compile("auto") is (gpus > 0)
    assert resolve_precision("auto") == ("mixed_float16" if gpus else "float32")
    assert resolve_jit_compile(True) is True
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"


def test_unknown_names_are_config_errors():
    with pytest.raises(ConfigError) as info:
        make_strategy("tpu")
    assert info.value.key == "strategy"
    with pytest.raises(ConfigError):
        resolve_precision("float16")


def test_bad_tf_config_is_a_config_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError) as info:
        make_strategy("auto")
    assert info.value.key == "TF_CONFIG"


# Logical devices must be configured before TensorFlow initialises, hence a subprocess.
SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ssl3d_keras.training import pretrain, load_run
    from ssl3d_keras.training.logging import read_metrics
    out = sys.argv[1]
    # No dropout and no BatchNorm (encoder norm "none", a head without hidden
    # layers, which are where the big fully head has its BatchNorm): their
    # per-replica randomness and batch statistics legitimately differ from one
    # device's; everything else must match.
    config = {"task": "rotation", "steps": 3, "batch_size": 4, "log_every": 1,
              "task_config": {"head_units": [], "head_dropout": 0.0},
              "encoder": {"depth": 1, "base_filters": 2, "norm": "none", "dropout": 0.0},
              "data": {"input_size": 16, "phantoms": {"n": 4, "size": 16}},
              "optimizer": {"learning_rate": 0.01}}
    result = {}
    for strategy in ("default", "mirrored"):
        summary = pretrain(dict(config, strategy=strategy), f"{out}/{strategy}", verbose=False)
        task, _ = load_run(f"{out}/{strategy}")
        result[strategy] = {
            "replicas": summary["replicas"], "strategy": summary["strategy"],
            "losses": [r["loss"] for r in read_metrics(f"{out}/{strategy}/metrics.csv")],
            "weights": [w.numpy().ravel().tolist() for w in task.weights]}
    print("RESULT" + json.dumps(result))
""")


@pytest.mark.subprocess
def test_mirrored_on_two_cpu_devices_matches_one_device(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")][0]
    result = json.loads(line[len("RESULT"):])
    one, two = result["default"], result["mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert two["strategy"] == "mirrored"
    # same global batches, loss = mean over the global batch, summed gradients
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    for a, b in zip(one["weights"], two["weights"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


# The contrastive tasks gather the targets (CPC) and the originals (exemplar) of every
# replica, so their negatives, losses and gradients are those of one device on the
# global batch; the exemplar bank is pushed the gathered batch on every replica.
# One process per case: a second MirroredStrategy in a process that already ran
# collective ops (all_gather) aborts on reused collective keys (tensorflow#62790).
CONTRASTIVE_CASES = {
    "cpc": ("cpc", {"grid": 2, "code_size": 8, "context_units": 8}),
    "exemplar-batch": ("exemplar", {"embedding_size": 8}),
    "exemplar-bank": ("exemplar", {"embedding_size": 8, "negatives": "bank", "bank_size": 6}),
}
CONTRASTIVE_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ssl3d_keras.training import pretrain, load_run
    from ssl3d_keras.training.logging import read_metrics
    out, task_name, task_config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    config = {"task": task_name, "steps": 3, "batch_size": 4, "log_every": 1,
              "task_config": task_config,
              "encoder": {"depth": 1, "base_filters": 2, "norm": "none", "dropout": 0.0},
              "data": {"input_size": 16, "phantoms": {"n": 4, "size": 16}},
              "optimizer": {"learning_rate": 0.01}}
    result = {}
    for strategy in ("default", "mirrored"):
        summary = pretrain(dict(config, strategy=strategy), f"{out}/{strategy}", verbose=False)
        task, _ = load_run(f"{out}/{strategy}")
        result[strategy] = {
            "replicas": summary["replicas"], "chance": summary["chance_accuracy"],
            "losses": [r["loss"] for r in read_metrics(f"{out}/{strategy}/metrics.csv")],
            "names": [w.path.split("/", 1)[-1] for w in task.weights],
            "weights": [w.numpy().ravel().tolist() for w in task.weights]}
    print("RESULT" + json.dumps(result))
""")


@pytest.mark.subprocess
@pytest.mark.parametrize("case", list(CONTRASTIVE_CASES))
def test_contrastive_negatives_span_the_replicas(tmp_path, case):
    task_name, task_config = CONTRASTIVE_CASES[case]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", CONTRASTIVE_SCRIPT, str(tmp_path), task_name,
         json.dumps(task_config)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")][0]
    result = json.loads(line[len("RESULT"):])
    one, two = result["default"], result["mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    assert two["chance"] == one["chance"]  # CPC: 1 / (4 volumes x 4 columns), not 1 / 8
    # Negatives from the global batch (with local ones CPC's loss would start near
    # log 8, not log 16): the same losses, and the same weights to float tolerance
    # (Adam divides by the gradient's size, so the summation order shows at ~1e-5).
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    assert one["names"] == two["names"]
    for name, a, b in zip(one["names"], one["weights"], two["weights"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=2e-5, err_msg=name)  # bank included
    if case == "exemplar-bank":
        bank = [w for name, w in zip(two["names"], two["weights"], strict=True) if "bank_originals" in name]
        assert bank and max(map(abs, bank[0])) > 0
