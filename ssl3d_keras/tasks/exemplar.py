"""3D exemplar networks (3D-Exe), and the 2D variant.

Each scan is its own class: an augmented view of a scan (anchor) must embed
closer to the original scan (positive) than another scan does (negative), by
a margin. One shared encoder and ONE shared projection head embed every view;
embeddings are L2-normalised and compared by squared Euclidean distance, which
spans [0, 4], so with the paper's margin of 1 the hinge switches off for
triplets that are already well separated.

The old code's variant (three separate sigmoid heads, one per triplet slot,
and a mean squared distance in [0, 1] that never switches a margin-1 hinge
off) stays reachable as `head="old"` for comparisons.

Negatives come from the other scans of the local batch: `negatives="batch"`
(default) takes the original of the previous scan in the batch (a roll by
one; the pipeline shuffles, so the pairing is random across steps) and
`negatives="semihard"` the FaceNet choice among the other scans' originals:
the closest one that is still farther from the anchor than the positive, or
the farthest one if none is (always taking the closest, "hardest", collapsed
every embedding to one point on phantoms). The batch must hold at least 2
scans (with one, a scan is its own negative).

The old variant has a shortcut: its negative slot has a head of its own, so
the loss falls by making that head's output differ from the anchor head's,
whatever the images (on phantoms its loss falls 9-fold and "accuracy" hits
1.0 within 80 steps). Its numbers measure no representation.
"""

import keras
import tensorflow as tf

from ssl3d_keras import losses
from ssl3d_keras.config import check_int
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models import ProjectionHead
from ssl3d_keras.ops import augment as augment_ops
from ssl3d_keras.tasks.base import ProxyTask
from ssl3d_keras.tasks.registry import register_task

POOLINGS = ("flatten", "avg")
NEGATIVES = ("batch", "semihard")
HEADS = ("shared", "old")


def _choice(key, value, choices):
    if value not in choices:
        raise ConfigError(key, f"expected one of {choices}. Received: {key}={value!r}")


@register_task("exemplar")
@keras.saving.register_keras_serializable(package="ssl3d")
class ExemplarTask(ProxyTask):
    """3D exemplar networks with a triplet loss (Taleb et al. 2020, after Dosovitskiy et al.).

    Args:
        input_shape: tuple, one volume `(D, H, W, C)` (3D) or `(H, W, C)` (2D).
        encoder: see `ProxyTask`.
        embedding_size: int, size of the embedding. Default 1024 (the paper's code).
        pooling: `"flatten"` (default, the old code: needs static spatial
            dimensions) or `"avg"` (global average pool) between encoder and head.
        projection_units: tuple of ints, hidden layers of the shared projection
            head (Dense -> ReLU -> BatchNorm each). Default `()`: one linear layer.
        margin: float, triplet margin. Default 1.0 (the paper).
        negatives: `"batch"` (default) or `"semihard"`, see the module doc.
            Accuracy is counted on the chosen negatives; semi-hard ones are
            farther than the positive whenever possible, so its accuracy
            overstates (compare runs with `"batch"`).
        head: `"shared"` (default) or `"old"` (three sigmoid heads and a mean
            squared distance, the authors' code).
        **kwargs: `name`, `trainable`, `dtype`; anything else is a `ConfigError`.

    `transform(volume, seed, training)` returns:
        inputs: float32 `(2, *shape, C)` = (augmented view, original). The view
            is augmented in evaluation too (deterministically from `seed`):
            without it anchor and positive are identical.
        target: int32 scalar 0 (unused: the target is which scan is which).

    Call arguments:
        inputs: float `(batch, 2, D, H, W, C)` (2D: `(batch, 2, H, W, C)`).

    Returns (of `call`):
        float32 `(batch, 3, embedding_size)`: the (anchor, positive, negative)
        embeddings of every triplet.

    Example:
    ```python
    from ssl3d_keras import tasks
    task = tasks.get("exemplar", input_shape=(128, 128, 128, 1))
    triplets = task(inputs)  # inputs (batch, 2, 128, 128, 128, 1) from task.transform
    loss, accuracy = task.loss_and_accuracy(target, triplets)
    ```
    """

    def __init__(
        self,
        input_shape,
        encoder=None,
        *,
        embedding_size=1024,
        pooling="flatten",
        projection_units=(),
        margin=1.0,
        negatives="batch",
        head="shared",
        **kwargs,
    ):
        super().__init__(input_shape, encoder, **kwargs)
        check_int("embedding_size", embedding_size)
        _choice("pooling", pooling, POOLINGS)
        _choice("negatives", negatives, NEGATIVES)
        _choice("head", head, HEADS)
        if not float(margin) >= 0:
            raise ConfigError("margin", f"expected a float >= 0. Received: margin={margin!r}")
        self.embedding_size = embedding_size
        self.pooling = pooling
        self.projection_units = [int(u) for u in projection_units]
        self.margin = float(margin)
        self.negatives = negatives
        self.head = head
        self.distance = "squared_euclidean" if head == "shared" else "mean_squared"

        pool = (
            keras.layers.GlobalAveragePooling3D
            if self.dim == 3
            else keras.layers.GlobalAveragePooling2D
        )
        self.pool = pool(name="pool") if pooling == "avg" else keras.layers.Flatten(name="flatten")
        if head == "shared":
            self.projection = ProjectionHead(
                embedding_size,
                units=tuple(self.projection_units),
                normalize=True,
                name="projection",
            )
        else:
            if self.projection_units:
                raise ConfigError(
                    "projection_units",
                    "head='old' has no hidden layers. "
                    f"Received: projection_units={projection_units!r}",
                )
            self.slot_heads = [
                keras.layers.Dense(
                    embedding_size, activation="sigmoid", dtype="float32", name=f"{slot}_head"
                )
                for slot in ("anchor", "positive", "negative")
            ]

    def transform(self, volume, seed, training=True):
        # Static shape (call() reshapes by it); a volume of another shape fails here.
        volume = tf.ensure_shape(tf.convert_to_tensor(volume, tf.float32), self.volume_shape)
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
        view = augment_ops.exemplar_augment(volume, seed)
        return tf.stack([view, volume]), tf.constant(0, tf.int32)

    def call(self, inputs, training=None):
        batch = tf.shape(inputs)[0]
        views = tf.reshape(inputs, (-1, *self.volume_shape))  # (batch * 2, *shape, C)
        features = self.pool(self.encoder(views, training=training))
        features = tf.reshape(features, (batch, 2, features.shape[-1]))
        if self.head == "shared":
            embedded = self.projection(
                tf.reshape(features, (-1, features.shape[-1])), training=training
            )
            embedded = tf.reshape(embedded, (batch, 2, self.embedding_size))
            anchor, positive = embedded[:, 0], embedded[:, 1]
            candidates = positive
        else:
            anchor_head, positive_head, negative_head = self.slot_heads
            anchor = anchor_head(features[:, 0])
            positive = positive_head(features[:, 1])
            candidates = negative_head(features[:, 1])
        negative = self._pick_negatives(anchor, positive, candidates)
        return tf.stack([anchor, positive, negative], axis=1)

    def _pick_negatives(self, anchor, positive, candidates):
        """One other scan's original per anchor. `(batch, E)` each -> `(batch, E)`."""
        if self.negatives == "batch":
            return tf.roll(candidates, shift=1, axis=0)
        anchor = tf.cast(anchor, tf.float32)
        positive, candidates = tf.cast(positive, tf.float32), tf.cast(candidates, tf.float32)
        d_ap = tf.reduce_sum(tf.square(anchor - positive), axis=-1)  # (batch,)
        d_an = tf.reduce_sum(tf.square(anchor[:, None] - candidates[None]), axis=-1)  # (b, b)
        other = tf.logical_not(tf.eye(tf.shape(d_an)[0], dtype=tf.bool))  # not its own scan
        # Semi-hard (FaceNet): the closest negative still farther than the positive;
        # if there is none, the farthest one. Hardest-first collapses the embedding.
        semihard = other & (d_an > d_ap[:, None])
        closest = tf.argmin(tf.where(semihard, d_an, float("inf")), axis=1)
        farthest = tf.argmax(tf.where(other, d_an, -float("inf")), axis=1)
        index = tf.where(tf.reduce_any(semihard, axis=1), closest, farthest)
        return tf.gather(candidates, index)

    def loss_and_accuracy(self, target, outputs):
        anchor, positive, negative = tf.unstack(tf.cast(outputs, tf.float32), 3, axis=1)
        return (
            losses.triplet_loss(anchor, positive, negative, self.margin, distance=self.distance),
            losses.triplet_accuracy(anchor, positive, negative, distance=self.distance),
        )

    @property
    def chance_accuracy(self):
        """0.5: a random embedding puts the positive closer half of the time."""
        return 0.5

    def get_config(self):
        return {
            **super().get_config(),
            "embedding_size": self.embedding_size,
            "pooling": self.pooling,
            "projection_units": list(self.projection_units),
            "margin": self.margin,
            "negatives": self.negatives,
            "head": self.head,
        }
