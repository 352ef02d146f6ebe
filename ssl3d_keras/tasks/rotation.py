"""3D rotation prediction (3D-Rot): which 90-degree rotation was applied?

Classes (the paper's table, `ssl3d_keras.ops.rotations.rotation_table(dim, "paper")`):
3D has 10 classes, 0 identity, then `np.rot90` with k = 1, 2, 3 in plane (1, 2)
(about axis 0, classes 1-3), in plane (0, 2) (about axis 1, classes 4-6) and in
plane (0, 1) (about axis 2, classes 7-9); 2D has 4 classes, k = 0..3 in plane
(0, 1). `rotations="cube24"` uses the full rotation group of the cube (24 classes
in 3D) instead.
"""

import keras
import tensorflow as tf

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.ops.rotations import rotate, rotation_table
from ssl3d_keras.tasks.base import ClassificationTask
from ssl3d_keras.tasks.registry import register_task

ROTATION_KINDS = ("paper", "cube24")


@register_task("rotation")
@keras.saving.register_keras_serializable(package="ssl3d")
class RotationTask(ClassificationTask):
    """Predict the 90-degree rotation applied to a volume.

    Network: encoder -> flatten -> big fully head -> one logit per rotation
    class; loss: softmax cross-entropy.

    Args:
        input_shape: tuple, `(D, H, W, C)` (3D) or `(H, W, C)` (2D). The spatial
            sides must be equal, so that every rotation keeps the shape.
        encoder: a `keras.Model`, a dict of `UNetEncoder` arguments, or `None`
            for the paper's U-Net encoder.
        rotations: str, `"paper"` (10 classes in 3D, 4 in 2D) or `"cube24"`
            (the 24 rotations of the cube in 3D; 4 in 2D). Default `"paper"`.
        head_units: tuple of int, hidden units of the big fully head.
            Default `(2048, 1024)` (the paper).
        head_dropout: float, dropout of the head. Default `0.5` (the paper).
        **kwargs: `name`, `trainable`, `dtype`; any other key is a `ConfigError`.

    Call arguments:
        inputs: float32 `(batch, D, H, W, C)` (3D) or `(batch, H, W, C)` (2D).
        training: bool.

    Output shape:
        float32 logits `(batch, num_classes)`.

    Example:

    >>> from ssl3d_keras import tasks
    >>> task = tasks.get("rotation", input_shape=(32, 32, 32, 1))
    >>> rotated, label = task.transform(tf.random.normal((32, 32, 32, 1)), tf.constant([0, 1]))
    >>> task.class_name(label)
    'rot90(0,1)k3'
    >>> task(rotated[tf.newaxis]).shape
    TensorShape([1, 10])
    """

    def __init__(
        self,
        input_shape,
        encoder=None,
        *,
        rotations="paper",
        head_units=(2048, 1024),
        head_dropout=0.5,
        **kwargs,
    ):
        super().__init__(input_shape, encoder, head_units=head_units,
                         head_dropout=head_dropout, **kwargs)
        if rotations not in ROTATION_KINDS:
            raise ConfigError(
                "rotations", f"must be one of {list(ROTATION_KINDS)}. Received: {rotations!r}"
            )
        spatial = self.volume_shape[:-1]
        if len(set(spatial)) != 1:
            raise ConfigError(
                "input_shape",
                "rotation prediction needs equal spatial sides so that every 90-degree "
                f"rotation keeps the shape. Received: input_shape={self.volume_shape}",
            )
        self.rotations = rotations
        self.table = rotation_table(self.dim, rotations)
        self._make_head()

    @property
    def num_classes(self):
        return len(self.table)

    def class_name(self, index):
        """Name of rotation class `index`, e.g. `"rot180_axis1"`."""
        return self.table[int(index)].name

    def transform(self, volume, seed, training=True):
        """Rotate `volume` by a class drawn uniformly from `seed`.

        Args:
            volume: float32 `(D, H, W, C)` or `(H, W, C)`.
            seed: int32 `[2]`, stateless seed.
            training: unused (the example is the same in evaluation).

        Returns:
            `(rotated volume (same shape), class int32 scalar)`.
        """
        volume = tf.convert_to_tensor(volume, tf.float32)
        seed = tf.cast(seed, tf.int32)
        label = tf.random.stateless_uniform(
            [], seed, minval=0, maxval=self.num_classes, dtype=tf.int32
        )
        rotated = rotate(volume, label, self.table)
        return tf.ensure_shape(rotated, self.volume_shape), label

    def call(self, inputs, training=None):
        # The head flattens the features and returns float32 logits under any precision policy.
        return self.head(self.encoder(inputs, training=training), training=training)

    def get_config(self):
        return {
            **super().get_config(),
            "rotations": self.rotations,
        }
