"""The global batch inside a `tf.distribute` step: gather a tensor from every replica.

Contrastive losses compare each example with the other examples of the batch.
Under a strategy each replica holds only its share of the global batch, so
without a gather the number of negatives would shrink with the number of
replicas and the loss would differ from the one-device loss on the same
global batch. `gather_replicas` concatenates a tensor over the replicas in
sync (`tf.distribute.ReplicaContext.all_gather`, a public API) and says where
this replica's own rows start; outside a strategy it changes nothing.

Gradients. `all_gather`'s gradient sums the upstream gradients of every
replica (an all-reduce) and hands each replica the slice of its own rows. So
if replica `r` computes a loss `L_r` from the gathered tensor and the
optimiser sums the replicas' gradients (as Keras optimisers do under a
strategy), the applied gradient is `d(sum_r L_r) / dW`, exactly the gradient
of the one-device loss on the global batch: negatives that live on another
replica pass their gradient back to the replica that computed them. Every
replica must therefore run the backward pass (they all do in a train step).
"""

import tensorflow as tf


def replicas_in_sync():
    """The number of replicas in sync in this replica context; 1 outside a strategy."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


@tf.custom_gradient
def _dense_gradient(x):
    """Identity whose gradient is dense: all_gather's gradient all-reduces it, and
    the all-reduce takes no `IndexedSlices` (what `tf.gather` of rows hands back)."""

    def gradient(upstream):
        return tf.convert_to_tensor(upstream)

    return tf.identity(x), gradient


def gather_replicas(value):
    """Concatenate `value` over the replicas in sync along axis 0, in replica order.

    Args:
        value: tensor `(rows, ...)`, this replica's rows (e.g. its share of the
            batch). Replicas may hold different numbers of rows; the other
            axes must agree.

    Returns:
        `(gathered, offset)`: `gathered` is `(total_rows, ...)`, the rows of
        replica 0, then replica 1, ...; `offset` is an int32 scalar, the index
        in `gathered` of this replica's first row. Outside a strategy (or with
        one replica, or in a cross-replica context) `(value, 0)`.

    Example:

    >>> import tensorflow as tf
    >>> from ssl3d_keras.ops.replicas import gather_replicas
    >>> gathered, offset = gather_replicas(tf.constant([[1.0], [2.0]]))
    >>> gathered.shape, int(offset)  # no strategy: unchanged
    (TensorShape([2, 1]), 0)
    """
    value = tf.convert_to_tensor(value)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value, tf.constant(0, tf.int32)
    gathered = _dense_gradient(context.all_gather(value, axis=0))
    rows = context.all_gather(tf.shape(value, out_type=tf.int32)[:1], axis=0)  # (replicas,)
    offset = tf.reduce_sum(rows[: context.replica_id_in_sync_group])
    return gathered, offset
