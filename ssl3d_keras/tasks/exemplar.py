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

Negatives. In-batch ones come from the other scans of the global batch (under
a distribution strategy the originals' embeddings of every replica are
gathered, `ssl3d_keras.ops.replicas`, so the choice and the loss are those of
one device on the same global batch): `negatives="batch"` (default) takes the
original of the previous scan in the batch (a roll by one; the pipeline
shuffles, so the pairing is random across steps) and `negatives="semihard"`
the FaceNet choice among the other scans' originals: the closest one that is
still farther from the anchor than the positive, or the farthest one if none
is (always taking the closest, "hardest", collapsed every embedding to one
point on phantoms). The global batch must hold at least 2 scans (with one, a
scan is its own negative).

`negatives="bank"` draws them from the whole dataset, as the old configs did
(`sample_neg_examples_from: "dataset"`: a random other scan per triplet, run
through the network with the anchor and the positive). A memory bank holds the
last `bank_size` originals (the volumes themselves); each anchor gets one of
them, uniformly at random, that is not its own scan, and it is encoded afresh
in the same encoder pass as the anchor and the positive, so it carries its
gradient. Why a bank of volumes:

- Not a bank of embeddings (MoCo's queue without its momentum encoder): its
  entries are stale and carry no gradient, and a triplet loss against them is
  met by drifting the whole, collapsing, embedding away from where the bank
  last saw it. Built and measured on phantoms: the held-out triplet loss
  stayed at the margin (0.96 before, 0.99 after 50 steps) where in-batch
  negatives cut it by more than 20 %.
- Not a pipeline that pairs each volume with a random other one: a task's
  `transform` sees one volume, and pairing in tf.data reads every volume
  twice. The bank keeps the data path as it is and draws from as many scans
  as it holds, whatever the batch size (the paper's batch is 2).
- The cost: the third encoder pass per triplet that the old code paid too, and
  `bank_size` volumes of memory (16 x 128^3 float32 = 128 MB).

Details:

- Each training forward pass (`training=True`, once per optimisation step)
  pushes the batch's originals into the bank after the negatives are drawn:
  first in, first out, rows in arrival order (the newest last). Under a
  strategy every replica pushes the gathered global batch, so every replica
  holds the same bank.
- "Its own scan" is recognised by a fingerprint of the original (its dot
  product with a fixed pseudo-random pattern), stored beside each volume;
  entries with the anchor's fingerprint are never its negative (small data
  sets revisit a scan within `bank_size` examples).
- The draw is seeded by the number of originals pushed so far, a variable
  saved in checkpoints with the bank: a resumed run draws what an
  uninterrupted one would.
- An anchor with no eligible entry (the first step, when the bank is empty)
  takes the in-batch negative of `negatives="batch"`.

The old variant has a shortcut: its negative slot has a head of its own, so
the loss falls by making that head's output differ from the anchor head's,
whatever the images (on phantoms its loss falls 9-fold and "accuracy" hits
1.0 within 80 steps). Its numbers measure no representation.

Augmentations (`augmentation`): the paper's 3D chain (`"volume"`, the 3D
default: `ops.augment.exemplar_augment`); the old code's 2D chain (`"image"`,
the 2D default: quarter turn, flips, brightness and contrast,
`ops.augment.exemplar_augment_2d`); and `"fundus"`, the old code's fundus
configs: the photograph itself is first zoomed and flipped
(`ops.augment.fundus_augment`, training only, as its data generator did), then
the view is made from it with the 2D chain.
"""

import keras
import tensorflow as tf

from ssl3d_keras import losses
from ssl3d_keras.config import check_int
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models import ProjectionHead
from ssl3d_keras.ops import augment as augment_ops
from ssl3d_keras.ops import replicas as replica_ops
from ssl3d_keras.tasks.base import ProxyTask
from ssl3d_keras.tasks.registry import register_task

POOLINGS = ("flatten", "avg")
NEGATIVES = ("batch", "semihard", "bank")
HEADS = ("shared", "old")
AUGMENTATIONS = ("volume", "image", "fundus")
# Fixed seeds: the fingerprint pattern, and the salt of the bank's draws.
FINGERPRINT_SEED = (7919, 104729)
BANK_DRAW_SALT = 1299709


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
        negatives: `"batch"` (default), `"semihard"` (both from the global
            batch) or `"bank"` (from the last `bank_size` originals of the
            whole dataset), see the module doc. Accuracy is counted on the
            chosen negatives; semi-hard ones are farther than the positive
            whenever possible, so its accuracy overstates (compare runs with
            `"batch"`).
        bank_size: int, originals (volumes) held by the bank of
            `negatives="bank"` (unused otherwise). Default 16.
        head: `"shared"` (default) or `"old"` (three sigmoid heads and a mean
            squared distance, the authors' code).
        augmentation: `None` (default: `"volume"` in 3D, `"image"` in 2D, as
            the old code), `"volume"`, `"image"` or `"fundus"` (2D only), see
            the module doc.
        **kwargs: `name`, `trainable`, `dtype`; anything else is a `ConfigError`.

    `transform(volume, seed, training)` returns:
        inputs: float32 `(2, *shape, C)` = (augmented view, original). The view
            is augmented in evaluation too (deterministically from `seed`):
            without it anchor and positive are identical. (`"fundus"`: the
            original is the zoomed and flipped photograph in training.)
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
        bank_size=16,
        head="shared",
        augmentation=None,
        **kwargs,
    ):
        super().__init__(input_shape, encoder, **kwargs)
        check_int("embedding_size", embedding_size)
        check_int("bank_size", bank_size)
        _choice("pooling", pooling, POOLINGS)
        _choice("negatives", negatives, NEGATIVES)
        _choice("head", head, HEADS)
        if augmentation is not None:
            _choice("augmentation", augmentation, AUGMENTATIONS)
            if augmentation != "volume" and self.dim != 2:
                raise ConfigError(
                    "augmentation",
                    f"{augmentation!r} augments 2D images (H, W, C). "
                    f"Received: augmentation={augmentation!r}, input_shape={self.volume_shape}",
                )
        if not float(margin) >= 0:
            raise ConfigError("margin", f"expected a float >= 0. Received: margin={margin!r}")
        self.embedding_size = embedding_size
        self.pooling = pooling
        self.projection_units = [int(u) for u in projection_units]
        self.margin = float(margin)
        self.negatives = negatives
        self.bank_size = int(bank_size)
        self.head = head
        self.augmentation = augmentation
        self.augmentation_chain = augmentation or ("volume" if self.dim == 3 else "image")
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
        if negatives == "bank":
            # Non-trainable weights: saved in checkpoints, so a resumed run has the same bank.
            # `aggregation="none"`: each replica writes its own copy, all the same values.
            self.bank = self.add_weight(
                shape=(self.bank_size, *self.volume_shape), initializer="zeros",
                dtype="float32", trainable=False, autocast=False, name="bank_originals",
            )
            self.bank_fingerprints = self.add_weight(
                shape=(self.bank_size,), initializer="zeros", dtype="float32",
                trainable=False, autocast=False, name="bank_fingerprints",
            )
            self.bank_pushed = self.add_weight(
                shape=(), initializer="zeros", dtype="int32", trainable=False,
                autocast=False, name="bank_pushed",
            )

    def transform(self, volume, seed, training=True):
        # Static shape (call() reshapes by it); a volume of another shape fails here.
        volume = tf.ensure_shape(tf.convert_to_tensor(volume, tf.float32), self.volume_shape)
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int32)
        if self.augmentation_chain == "volume":
            view = augment_ops.exemplar_augment(volume, seed)
        else:
            if self.augmentation_chain == "fundus":
                photo_seed, seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
                if training:
                    volume = augment_ops.fundus_augment(volume, photo_seed)
            view = augment_ops.exemplar_augment_2d(volume, seed)
        return tf.stack([view, volume]), tf.constant(0, tf.int32)

    def call(self, inputs, training=None):
        batch = tf.shape(inputs)[0]
        views = tf.reshape(inputs, (-1, *self.volume_shape))  # (batch * 2, *shape, C)
        if self.negatives == "bank":
            # Negatives from the bank go through the same encoder pass: (batch * 3, ...).
            originals, offset = replica_ops.gather_replicas(inputs[:, 1])  # the global batch
            fingerprints = self.fingerprints(originals)
            rows = offset + tf.range(batch)
            drawn, from_bank = self._draw_from_bank(rows, fingerprints)
            # No eligible entry: the previous scan's original, as negatives="batch".
            previous = tf.gather(originals, (rows - 1) % tf.shape(originals)[0])
            from_bank = tf.reshape(from_bank, [-1] + [1] * len(self.volume_shape))
            views = tf.concat([views, tf.where(from_bank, drawn, previous)], axis=0)
            if training:
                self._push_to_bank(originals, fingerprints)
        features = self.pool(self.encoder(views, training=training))
        if self.head == "shared":
            embedded = self.projection(features, training=training)
            anchor, positive = embedded[: 2 * batch : 2], embedded[1 : 2 * batch : 2]
            candidates, drawn_negatives = positive, embedded[2 * batch :]
        else:
            anchor_head, positive_head, negative_head = self.slot_heads
            anchor = anchor_head(features[: 2 * batch : 2])
            positive = positive_head(features[1 : 2 * batch : 2])
            candidates = negative_head(features[1 : 2 * batch : 2])
            drawn_negatives = negative_head(features[2 * batch :])
        if self.negatives == "bank":
            negative = drawn_negatives
        else:
            # The originals of the global batch; this replica's scans are rows offset, ...
            pool, offset = replica_ops.gather_replicas(candidates)  # (global batch, E)
            negative = self._pick_negatives(anchor, positive, pool, offset + tf.range(batch))
        return tf.stack([anchor, positive, negative], axis=1)

    def _pick_negatives(self, anchor, positive, pool, rows=None):
        """One other scan's original per anchor, from the batch.

        Args:
            anchor, positive: `(n, E)`, this replica's triplets.
            pool: `(N, E)`, the originals of the global batch (`N = n` on one device).
            rows: int32 `(n,)`, each anchor's own scan in `pool`; default `0..n-1`.

        Returns:
            `(n, E)`.
        """
        size = tf.shape(pool)[0]
        rows = tf.range(tf.shape(anchor)[0]) if rows is None else rows
        if self.negatives != "semihard":
            return tf.gather(pool, (rows - 1) % size)  # the previous scan's original
        anchor = tf.cast(anchor, tf.float32)
        positive, candidates = tf.cast(positive, tf.float32), tf.cast(pool, tf.float32)
        d_ap = tf.reduce_sum(tf.square(anchor - positive), axis=-1)  # (n,)
        d_an = tf.reduce_sum(tf.square(anchor[:, None] - candidates[None]), axis=-1)  # (n, N)
        other = tf.not_equal(tf.range(size)[None], rows[:, None])  # not its own scan
        # Semi-hard (FaceNet): the closest negative still farther than the positive;
        # if there is none, the farthest one. Hardest-first collapses the embedding.
        semihard = other & (d_an > d_ap[:, None])
        closest = tf.argmin(tf.where(semihard, d_an, float("inf")), axis=1)
        farthest = tf.argmax(tf.where(other, d_an, -float("inf")), axis=1)
        index = tf.where(tf.reduce_any(semihard, axis=1), closest, farthest)
        return tf.gather(pool, index)

    def fingerprints(self, originals):
        """A number per original that tells scans apart: its dot product with a fixed pattern.

        Args:
            originals: float `(n, *shape, C)`.

        Returns:
            float32 `(n,)`; the same original gives the same number.
        """
        pattern = tf.random.stateless_uniform(
            self.volume_shape, FINGERPRINT_SEED, minval=-1.0, maxval=1.0
        )
        axes = list(range(1, len(self.volume_shape) + 1))
        return tf.reduce_sum(tf.cast(originals, tf.float32) * pattern, axis=axes)

    def _draw_from_bank(self, rows, fingerprints):
        """For each anchor a random bank entry that is not its own scan (see the module doc).

        Args:
            rows: int32 `(n,)`, this replica's anchors' rows in the global batch.
            fingerprints: float32 `(N,)`, of the global batch's originals.

        Returns:
            `(volumes, found)`: float32 `(n, *shape, C)`, the drawn originals, and
            bool `(n,)`, whether the anchor had an eligible entry (else the row
            of `volumes` is meaningless).
        """
        size = self.bank_size
        pushed = tf.convert_to_tensor(self.bank_pushed.value)
        filled = tf.range(size) >= size - tf.minimum(pushed, size)  # the newest rows are last
        own = tf.gather(fingerprints, rows)[:, None]  # (n, 1)
        stored = tf.convert_to_tensor(self.bank_fingerprints.value)[None]  # (1, size)
        # Equal up to float reduction order on another device.
        same = tf.abs(stored - own) <= 1e-5 * tf.maximum(tf.abs(stored), tf.abs(own)) + 1e-6
        eligible = filled[None] & ~same  # (n, size)
        # One uniform draw per anchor of the global batch, the same on every replica.
        noise = tf.random.stateless_uniform(
            tf.stack([tf.shape(fingerprints)[0], size]), tf.stack([pushed, BANK_DRAW_SALT])
        )
        noise = tf.where(eligible, tf.gather(noise, rows), -1.0)
        drawn = tf.gather(tf.convert_to_tensor(self.bank.value), tf.argmax(noise, axis=1))
        return drawn, tf.reduce_any(eligible, axis=1)

    def _push_to_bank(self, originals, fingerprints):
        """Append the global batch's originals to the bank, dropping the oldest rows."""
        size = self.bank_size
        self.bank.assign(tf.concat([self.bank.value, originals], axis=0)[-size:])
        self.bank_fingerprints.assign(
            tf.concat([self.bank_fingerprints.value, fingerprints], axis=0)[-size:]
        )
        self.bank_pushed.assign_add(tf.shape(originals)[0])

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
            "bank_size": self.bank_size,
            "head": self.head,
            "augmentation": self.augmentation,
        }
