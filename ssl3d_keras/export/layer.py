"""`SavedModelLayer`: fine-tune a reusable TF2 SavedModel inside any Keras 3 model.

Why not the existing layers:

- `hub.KerasLayer` is a tf_keras (Keras 2) layer; inside a Keras 3 model it
  fails or silently freezes the weights (tensorflow/hub#903).
- `keras.layers.TFSMLayer` wraps each restored variable in a `keras.Variable`
  named after the TF name, which keeps its `:0` suffix; optimizers with slot
  variables (Adam) then fail to create `..._kernel:0_momentum`. It also offers
  only one training endpoint and no regularisation losses.

How this layer does it: the restored `tf.Variable` objects are the ones the
SavedModel's functions capture, so they must be the variables the optimizer
updates. `keras.Variable(initializer=<a tf.Variable>)` adopts that very
`tf.Variable` (no copy) on the TensorFlow backend, so each restored variable
is exposed as a Keras weight with a clean name (`conv3d_kernel`, no `/` or
`:`). Gradients flow through the restored `__call__`, BatchNorm moving
statistics are updated by the assign ops inside the `training=True` trace, and
the module's `regularization_losses` are added with `add_loss`.
"""

import os
import re

import keras
import tensorflow as tf

from ssl3d_keras.errors import ExportError

_OUTPUTS = ("features", "skips")


def _clean_name(tf_name):
    """`encoder/conv3d/kernel:0` -> `encoder_conv3d_kernel` (a valid Keras variable name)."""
    name = re.sub(r":\d+$", "", str(tf_name))
    return re.sub(r"[^0-9A-Za-z_.-]", "_", name) or "variable"


@keras.saving.register_keras_serializable(package="ssl3d")
class SavedModelLayer(keras.layers.Layer):
    """A reusable TF2 SavedModel (e.g. an `ssl3d export`) as a fine-tunable Keras 3 layer.

    The Keras 3 counterpart of `hub.KerasLayer`: works with every optimizer
    (Adam included), updates BatchNorm moving statistics in training, and adds
    the module's regularisation losses. TensorFlow backend only.

    Args:
        handle: str, path of a SavedModel folder with the reusable interface
            (`__call__(inputs, training)`, `variables`, `trainable_variables`,
            `regularization_losses`).
        output: `"features"` (default) calls `__call__` and returns the feature
            tensor; `"skips"` calls the module's `skips` function and returns
            its dict (`skip_1`.., `bottleneck`, `features`) for a U-Net decoder.
        trainable: bool, default True. When False the module runs in inference
            mode (BatchNorm uses its moving statistics, Dropout is off), as
            Keras 3 does for a frozen BatchNormalization.
        **kwargs: `name`, `dtype`.

    Call arguments:
        inputs: float32 tensor `(batch, D, H, W, C)` (3D) or `(batch, H, W, C)` (2D).
        training: Python bool or boolean tensor.

    Output shape:
        `"features"`: `(batch, D/2**k, H/2**k, W/2**k, F)`; `"skips"`: a dict of
        such tensors, one per scale.

    Example:

    >>> from ssl3d_keras.export import SavedModelLayer
    >>> inputs = keras.Input((None, None, None, 1))          # doctest: +SKIP
    >>> x = SavedModelLayer("export/savedmodel")(inputs)      # doctest: +SKIP
    >>> x = keras.layers.GlobalAveragePooling3D()(x)         # doctest: +SKIP
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(x))  # doctest: +SKIP
    >>> model.compile("adam", "sparse_categorical_crossentropy")  # doctest: +SKIP
    """

    def __init__(self, handle, output="features", trainable=True, **kwargs):
        if keras.backend.backend() != "tensorflow":
            raise ExportError(f"SavedModelLayer needs the TensorFlow backend. "
                              f"Received: backend {keras.backend.backend()!r}")
        if output not in _OUTPUTS:
            raise ExportError(f"SavedModelLayer output must be one of {list(_OUTPUTS)}. "
                              f"Received: output={output!r}")
        super().__init__(trainable=trainable, **kwargs)
        self.handle = os.fspath(handle)
        self.output_kind = output
        if not os.path.isfile(os.path.join(self.handle, "saved_model.pb")):
            raise ExportError(f"{self.handle}: not a SavedModel folder (no saved_model.pb)")
        self._module = tf.saved_model.load(self.handle)
        for attr in ("variables", "trainable_variables"):
            if not hasattr(self._module, attr):
                raise ExportError(f"{self.handle}: not a reusable SavedModel (no '{attr}'); "
                                  "export it with `ssl3d export` or the TF Hub conventions")
        if not callable(self._module):
            raise ExportError(f"{self.handle}: the SavedModel has no __call__")
        if output == "skips" and not hasattr(self._module, "skips"):
            raise ExportError(f"{self.handle}: the SavedModel has no 'skips' function. "
                              "Received: output='skips'")
        self._function = self._module if output == "features" else self._module.skips
        trainable_ids = {id(v) for v in self._module.trainable_variables}
        # Adopt (not copy) each restored tf.Variable: it is what the saved
        # functions read and write.
        self.module_weights = [
            keras.Variable(v, name=_clean_name(v.name), trainable=id(v) in trainable_ids)
            for v in self._module.variables
        ]
        self._regularizers = list(getattr(self._module, "regularization_losses", []))
        self.built = True

    def call(self, inputs, training=None):
        if not self.trainable or training is None:
            training = False
        if isinstance(training, bool):
            outputs = self._function(inputs, training=training)
        else:
            outputs = tf.cond(tf.cast(training, tf.bool),
                              lambda: self._function(inputs, training=True),
                              lambda: self._function(inputs, training=False))
        if self.trainable:
            for regularizer in self._regularizers:
                self.add_loss(regularizer())
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({"handle": self.handle, "output": self.output_kind})
        return config
