"""Task heads: the paper's "big fully" MLP and a projection head for embeddings."""

import keras

from ssl3d_keras.errors import ConfigError


def _check_units(units):
    units = tuple(int(u) for u in units)
    if any(u < 1 for u in units):
        raise ConfigError("units", f"expected positive ints. Received: units={units}")
    return units


class _MLPHead(keras.layers.Layer):
    """Flatten -> (Dense -> ReLU -> BatchNorm -> Dropout) per hidden layer -> Dense."""

    def __init__(self, outputs, units, dropout, batch_norm, **kwargs):
        super().__init__(**kwargs)
        if int(outputs) < 1:
            raise ConfigError("num_outputs", f"expected an int >= 1. Received: {outputs!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(
                "dropout", f"expected a rate in [0, 1). Received: dropout={dropout!r}"
            )
        self._flatten = keras.layers.Flatten()
        hidden = []
        for i, width in enumerate(units):
            # He initialisation for ReLU layers, as the encoders; the linear output keeps Glorot.
            hidden.append(keras.layers.Dense(width, activation="relu",
                                             kernel_initializer="he_normal", name=f"dense{i + 1}"))
            if batch_norm:
                hidden.append(keras.layers.BatchNormalization(name=f"norm{i + 1}"))
            if dropout > 0:
                hidden.append(keras.layers.Dropout(dropout, name=f"dropout{i + 1}"))
        # A Sequential, not a Python list of lists: tf.train.Checkpoint tracks layers
        # through attributes, and layers inside nested lists were left out of it.
        self._hidden = keras.Sequential(hidden, name="hidden")
        # float32 output so logits and embeddings stay exact under mixed precision.
        self._output = keras.layers.Dense(int(outputs), dtype="float32", name="output")

    def build(self, input_shape):
        shape = self._flatten.compute_output_shape(input_shape)
        if shape[-1] is None:
            raise ValueError(
                f"{self.name} needs static non-batch dimensions to size its first Dense "
                f"layer. Received: input_shape={tuple(input_shape)}"
            )
        if self._hidden.layers:
            self._hidden.build(shape)
            shape = self._hidden.compute_output_shape(shape)
        self._output.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = self._flatten(inputs)
        if self._hidden.layers:
            x = self._hidden(x, training=training)
        return self._output(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self._output.units)


@keras.saving.register_keras_serializable(package="ssl3d")
class BigFullyHead(_MLPHead):
    """The paper's "big fully" classification head.

    `Dense(2048, relu) -> BatchNorm -> Dropout(0.5) -> Dense(1024, relu) ->
    BatchNorm -> Dropout(0.5) -> Dense(num_outputs)` (logits, no softmax).

    Args:
        num_outputs: int, number of logits (classes of the proxy task).
        units: tuple of ints, widths of the hidden layers. Default `(2048, 1024)`.
        dropout: float, dropout rate after each hidden layer. Default 0.5.

    Input shape:
        `(batch, ...)`; every axis after the batch axis is flattened (they
        must be static), e.g. encoder features `(batch, d, h, w, F)`.

    Output shape:
        `(batch, num_outputs)` float32 logits, also under mixed precision.

    Example:
    ```python
    head = BigFullyHead(10)
    logits = head(features)  # (batch, 10)
    ```
    """

    def __init__(self, num_outputs, units=(2048, 1024), dropout=0.5, **kwargs):
        self.num_outputs = int(num_outputs)
        self.units = _check_units(units)
        self.dropout = float(dropout)
        super().__init__(self.num_outputs, self.units, self.dropout, True, **kwargs)

    def get_config(self):
        return {
            **super().get_config(),
            "num_outputs": self.num_outputs,
            "units": list(self.units),
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="ssl3d")
class ProjectionHead(_MLPHead):
    """Projection head mapping features to an embedding (exemplar, contrastive tasks).

    `(Dense(u, relu) -> [BatchNorm]) per u in units -> Dense(embedding_dim)`,
    then an optional L2 normalisation.

    Args:
        embedding_dim: int, size of the embedding. Default 128.
        units: tuple of ints, widths of the hidden layers. Default `(1024,)`.
        batch_norm: bool, BatchNorm after each hidden layer. Default `True`.
        normalize: bool, L2-normalise the embedding (unit length). Default `True`.

    Input shape:
        `(batch, ...)`; every axis after the batch axis is flattened.

    Output shape:
        `(batch, embedding_dim)` float32.
    """

    def __init__(self, embedding_dim=128, units=(1024,), batch_norm=True, normalize=True, **kwargs):
        self.embedding_dim = int(embedding_dim)
        self.units = _check_units(units)
        self.batch_norm = bool(batch_norm)
        self.normalize = bool(normalize)
        super().__init__(self.embedding_dim, self.units, 0.0, self.batch_norm, **kwargs)

    def call(self, inputs, training=None):
        x = super().call(inputs, training=training)
        if self.normalize:
            x = x / keras.ops.maximum(keras.ops.norm(x, axis=-1, keepdims=True), 1e-12)
        return x

    def get_config(self):
        return {
            **super().get_config(),
            "embedding_dim": self.embedding_dim,
            "units": list(self.units),
            "batch_norm": self.batch_norm,
            "normalize": self.normalize,
        }
