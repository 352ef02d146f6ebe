"""The cross-replica gather: values, offsets and gradients on two logical CPU devices."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.ops.replicas import gather_replicas, replicas_in_sync


def test_outside_a_strategy_nothing_changes():
    assert replicas_in_sync() == 1
    value = tf.reshape(tf.range(6.0), (3, 2))
    gathered, offset = gather_replicas(value)
    np.testing.assert_array_equal(gathered, value)
    assert int(offset) == 0 and offset.dtype == tf.int32
    # The default strategy's replica context, as in a one-device train step.
    result = tf.distribute.get_strategy().run(lambda: gather_replicas(value))
    np.testing.assert_array_equal(result[0], value)
    assert int(result[1]) == 0


# Logical devices must be configured before TensorFlow initialises, hence a subprocess.
SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ssl3d_keras.ops.replicas import gather_replicas, replicas_in_sync
    from ssl3d_keras.losses import info_nce_loss

    strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices()])
    rng = np.random.default_rng(0)
    out = {}

    # Unequal shares: replica 0 holds 3 rows, replica 1 holds 1.
    parts = [rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(1, 2)).astype("float32")]
    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(parts[ctx.replica_id_in_sync_group]))
    gathered, offset = strategy.run(tf.function(gather_replicas), args=(values,))
    out["gathered"] = [v.numpy().tolist() for v in strategy.experimental_local_results(gathered)]
    out["offsets"] = [int(v) for v in strategy.experimental_local_results(offset)]
    out["parts"] = [p.tolist() for p in parts]
    out["replicas"] = [int(v) for v in strategy.experimental_local_results(
        strategy.run(lambda: tf.constant(replicas_in_sync())))]

    # Gradient of a contrastive loss whose negatives live on the other replica:
    # each replica scores its 2 rows against all 4 gathered rows; the loss is the
    # mean over replicas, the applied gradient the sum of the replicas' gradients.
    x = rng.normal(size=(4, 3)).astype("float32")
    with strategy.scope():
        w = tf.Variable(rng.normal(size=(3, 3)).astype("float32"))
    def replica_step(xs):
        with tf.GradientTape() as tape:
            codes = xs @ w
            candidates, first = gather_replicas(codes)
            loss = info_nce_loss(codes[None], candidates[None], offset=first)
            # Rows picked from the gathered tensor: their gradient comes back as IndexedSlices.
            loss += tf.reduce_sum(tf.gather(candidates, [3, 0]) ** 2) / 2
            scaled = loss / tf.distribute.get_replica_context().num_replicas_in_sync
        return loss, tape.gradient(scaled, w)
    inputs = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(x[2 * ctx.replica_id_in_sync_group:][:2]))
    @tf.function
    def step(xs):
        loss, grad = strategy.run(tf.function(replica_step), args=(xs,))
        return (strategy.reduce("MEAN", loss, axis=None), strategy.reduce("SUM", grad, axis=None))
    loss, grad = step(inputs)
    with tf.GradientTape() as tape:
        codes = tf.constant(x) @ w
        one = info_nce_loss(codes[None], codes[None]) + tf.reduce_sum(
            tf.gather(codes, [3, 0]) ** 2) / 2
    out["loss"] = [float(loss), float(one)]
    out["grad"] = [grad.numpy().tolist(), tape.gradient(one, w).numpy().tolist()]
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.subprocess
def test_gather_on_two_replicas_values_offsets_and_gradients():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT")][0]
    out = json.loads(line[len("RESULT"):])
    whole = np.concatenate([np.array(p) for p in out["parts"]])
    for gathered in out["gathered"]:  # every replica sees all rows, in replica order
        np.testing.assert_array_equal(np.array(gathered), whole)
    assert out["offsets"] == [0, 3]
    assert out["replicas"] == [2, 2]
    # The distributed loss and gradient are the one-device ones on the global batch:
    # the gather passes the negatives' gradients back to the replica that made them.
    distributed, one = out["loss"]
    np.testing.assert_allclose(distributed, one, rtol=1e-5)
    np.testing.assert_allclose(np.array(out["grad"][0]), np.array(out["grad"][1]),
                               rtol=1e-4, atol=1e-6)
