"""The base class every proxy task derives from.

A task is a `keras.Model` around a shared encoder. It owns three things:

- `transform(volume, seed, training)`: pure-TF, graph-safe, stateless-seeded
  function of ONE volume that makes one proxy example `(inputs, target)`.
  The tf.data pipeline maps it over volumes, then batches.
- `call(inputs, training)`: the network on a batch of `inputs`.
- `loss_and_accuracy(target, outputs)`: the proxy loss (a float32 scalar,
  mean over the local batch) and a proxy accuracy (float32 scalar).

Everything else (the custom training loop, `model.fit`, checkpoints, export)
only uses this interface, so adding a sixth task is one file.
"""

import inspect

import keras
import tensorflow as tf

from ssl3d_keras.config import reject_unknown_kwargs
from ssl3d_keras.errors import ConfigError


class ProxyTask(keras.Model):
    """Base class of the proxy tasks.

    Args:
        input_shape: tuple, shape of one volume given to `transform`:
            `(D, H, W, C)` for 3D or `(H, W, C)` for 2D.
        encoder: a `keras.Model` mapping `(batch, *spatial, C)` to features,
            or a dict for `ssl3d_keras.models.build_encoder` (`architecture`
            "unet" (default) or "densenet121", plus its arguments), or `None`
            for the paper's U-Net encoder. The encoder is shared by every
            patch of a task.
        **kwargs: only `name`, `trainable` and `dtype`; any other key is a
            `ConfigError` that names it (Keras models accept unknown keys
            silently, which hid typos in the old code).

    Subclasses set `task_name` (through `@register_task`) and implement
    `transform`, `call`, `loss_and_accuracy` and `chance_accuracy`.
    """

    task_name = None

    def __init__(self, input_shape, encoder=None, **kwargs):
        reject_unknown_kwargs(type(self).__name__, kwargs,
                              known=inspect.signature(type(self).__init__).parameters)
        super().__init__(**kwargs)
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) not in (3, 4):
            raise ConfigError(
                "input_shape",
                "expected (D, H, W, C) for 3D or (H, W, C) for 2D. "
                f"Received: input_shape={input_shape}",
            )
        self.volume_shape = input_shape
        self.dim = len(input_shape) - 1
        self.channels = input_shape[-1]
        self.encoder = self._make_encoder(encoder)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")

    def _make_encoder(self, encoder):
        if isinstance(encoder, keras.Model):
            return encoder
        from ssl3d_keras.models.factory import build_encoder

        if encoder is None:
            encoder = {}
        if isinstance(encoder, dict) and "class_name" in encoder:
            return keras.saving.deserialize_keras_object(encoder)
        if not isinstance(encoder, dict):
            raise ConfigError("encoder", f"expected a keras.Model or a dict. Received: {encoder!r}")
        # `architecture` picks the network ("unet" when absent); channels and dim come from data.
        return build_encoder(encoder, input_channels=self.channels, dim=self.dim)

    # --- what each task implements -------------------------------------------------------

    def transform(self, volume, seed, training=True):
        """One proxy example from one volume.

        Args:
            volume: float32 tensor `(D, H, W, C)` (3D) or `(H, W, C)` (2D).
            seed: int32 tensor of shape `[2]`; the same seed gives the same example.
            training: bool (Python); evaluation makes a deterministic example.

        Returns:
            `(inputs, target)` for one example (no batch axis).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement transform()")

    def loss_and_accuracy(self, target, outputs):
        """Proxy loss and accuracy of a batch.

        Returns:
            `(loss, accuracy)`: float32 scalars, means over the local batch.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement loss_and_accuracy()")

    @property
    def chance_accuracy(self):
        """The proxy accuracy of guessing (e.g. 1/10 for 3D rotation)."""
        raise NotImplementedError(f"{type(self).__name__} must define chance_accuracy")

    # --- shared machinery ----------------------------------------------------------------

    def compute_loss_and_metrics(self, inputs, target, training=False):
        """Forward pass, proxy loss (plus any regularisation losses) and accuracy.

        Returns:
            `(loss, metrics)` with `loss` a float32 scalar (local batch mean) and
            `metrics` a dict of float32 scalars with keys `loss` and `accuracy`.
        """
        outputs = self(inputs, training=training)
        loss, accuracy = self.loss_and_accuracy(target, outputs)
        loss = tf.cast(loss, tf.float32)
        if self.losses:
            loss = loss + tf.add_n([tf.cast(x, tf.float32) for x in self.losses])
        return loss, {"loss": loss, "accuracy": tf.cast(accuracy, tf.float32)}

    def optimization_step(self, inputs, target, optimizer, replicas=1):
        """One gradient step on this replica's share of the global batch.

        The one train step of the project: `train_step` (for `fit`) and the
        custom loop (`ssl3d_keras.training.make_train_step`) both call it.

        Args:
            inputs, target: this replica's examples.
            optimizer: a built Keras optimiser (its `scale_loss` handles
                mixed_float16 loss scaling).
            replicas: replicas in sync; each holds 1/replicas of the global
                batch, and the optimiser sums their gradients, giving those of
                the global-batch mean.

        Returns:
            dict of float32 scalars `loss`, `accuracy` (local batch means).
        """
        with tf.GradientTape() as tape:
            loss, metrics = self.compute_loss_and_metrics(inputs, target, training=True)
            scaled = optimizer.scale_loss(loss / replicas)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return metrics

    def train_step(self, data):
        inputs, target = self._unpack(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        metrics = self.optimization_step(inputs, target, self.optimizer, replicas)
        return self._update_trackers(metrics)

    def test_step(self, data):
        inputs, target = self._unpack(data)
        _, metrics = self.compute_loss_and_metrics(inputs, target, training=False)
        return self._update_trackers(metrics)

    @staticmethod
    def _unpack(data):
        # fit() passes (inputs, target); train_on_batch() and evaluate() add a sample weight.
        inputs, target, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ConfigError("sample_weight", "proxy tasks weigh every example equally; "
                              "sample weights are not supported")
        return inputs, target

    def _update_trackers(self, metrics):
        self.loss_tracker.update_state(metrics["loss"])
        self.accuracy_tracker.update_state(metrics["accuracy"])
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def build_from_example(self):
        """Create every weight by running one evaluation example through the model."""
        volume = tf.zeros(self.volume_shape, tf.float32)
        inputs, _ = self.transform(volume, tf.constant([0, 0], tf.int32), training=False)
        batch = tf.nest.map_structure(lambda x: x[tf.newaxis], inputs)
        self(batch, training=False)
        return self

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "input_shape": list(self.volume_shape),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class ClassificationTask(ProxyTask):
    """A proxy task whose target is one of `num_classes` classes (rotation, jigsaw, RPL).

    The head is the paper's "big fully" MLP; `call` returns float32 logits
    `(batch, num_classes)`, the loss is sparse categorical cross-entropy and the
    accuracy top-1. A subclass sets up what `num_classes` needs, then calls
    `self._make_head()`.

    Args:
        input_shape, encoder: as `ProxyTask`.
        head_units: tuple of ints, hidden widths of the head. Default `(2048, 1024)`.
        head_dropout: float, dropout after each hidden layer. Default 0.5.
    """

    def __init__(self, input_shape, encoder=None, *, head_units=(2048, 1024), head_dropout=0.5,
                 **kwargs):
        super().__init__(input_shape, encoder, **kwargs)
        self.head_units = tuple(int(u) for u in head_units)
        self.head_dropout = float(head_dropout)

    def _make_head(self):
        from ssl3d_keras.models import BigFullyHead

        self.head = BigFullyHead(self.num_classes, units=self.head_units,
                                 dropout=self.head_dropout)

    def _draw_label(self, seed):
        """A class uniform over `num_classes` and an independent seed for the rest.

        Returns:
            `(label int32 scalar, seed int32 [2])`.
        """
        label_seed, rest_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.cast(seed, tf.int32), 2)
        )
        label = tf.random.stateless_uniform(
            [], label_seed, minval=0, maxval=self.num_classes, dtype=tf.int32
        )
        return label, rest_seed

    @property
    def num_classes(self):
        raise NotImplementedError(f"{type(self).__name__} must define num_classes")

    @property
    def chance_accuracy(self):
        return 1.0 / self.num_classes

    def loss_and_accuracy(self, target, outputs):
        loss = keras.losses.sparse_categorical_crossentropy(target, outputs, from_logits=True)
        accuracy = keras.metrics.sparse_categorical_accuracy(target, outputs)
        return keras.ops.mean(loss), keras.ops.mean(accuracy)

    def get_config(self):
        return {
            **super().get_config(),
            "head_units": list(self.head_units),
            "head_dropout": self.head_dropout,
        }
