"""The interface every encoder shares: a functional model with named multi-scale outputs.

`UNetEncoder` and `DenseNetEncoder` build their graphs and hand them to
`PyramidEncoder`, which gives both the same skip model, input checks and
serialisation, so tasks, export and loading treat them alike.
"""

import keras

from ssl3d_keras.errors import ConfigError

__all__ = ["PyramidEncoder"]


class PyramidEncoder(keras.Model):
    """Base of the encoders (keras-hub's "backbone" role): no head, no loss.

    A subclass builds its graph, calls `super().__init__(inputs=..., outputs=...,
    name=...)`, then sets `dim`, `input_channels`, `min_input_size`,
    `divisible_by` and `pyramid_outputs` (a dict of symbolic tensors, finest
    scale first), and implements `get_config` and `_minimum_size_text`.

    Attributes:
        min_input_size: int, the smallest spatial size the encoder accepts.
        divisible_by: int, spatial sizes divisible by it keep every pyramid
            output aligned for a decoder (U-Net: `2**depth`; DenseNet: 32).
        pyramid_outputs: dict of symbolic tensors, finest scale first.

    Inputs that cannot work (wrong rank, wrong channel count, smaller than
    `min_input_size`) raise a one-line `ConfigError` before Keras wraps the call.
    """

    divisible_by = 1

    def skips_model(self):
        """A `keras.Model` from the same input to the pyramid outputs and the features.

        The one skips model of the project: the SavedModel's `skips` callable,
        the metadata and the decoders all use it.

        The model shares this encoder's layers (and weights).

        Returns:
            `keras.Model` whose output is a dict with the keys of
            `pyramid_outputs` plus `"features"` (the encoder output).
        """
        outputs = {**self.pyramid_outputs, "features": self.output}
        return keras.Model(self.input, outputs, name=f"{self.name}_skips")

    def _minimum_size_text(self):
        """Why inputs must be at least `min_input_size`, e.g. "2**5 = 32 for a depth-4 encoder"."""
        raise NotImplementedError(f"{type(self).__name__} must implement _minimum_size_text()")

    def _check_input_shape(self, shape):
        shape = tuple(None if s is None else int(s) for s in shape)
        expected = self.dim + 2
        if len(shape) != expected:
            raise ConfigError(
                "input_shape",
                f"{self.name} expects inputs of rank {expected} (batch, *spatial, channels) "
                f"for dim={self.dim}. Received: input_shape={shape}",
            )
        if shape[-1] is not None and shape[-1] != self.input_channels:
            raise ConfigError(
                "input_shape",
                f"{self.name} was built for {self.input_channels} input channel(s); "
                f"use ssl3d_keras.models.adapt_input_channels to change it. "
                f"Received: input_shape={shape}",
            )
        for size in shape[1:-1]:
            if size is not None and size < self.min_input_size:
                raise ConfigError(
                    "input_shape",
                    f"input size {size} is smaller than {self._minimum_size_text()}. "
                    f"Received: input_shape={shape[1:]}",
                )

    def __call__(self, inputs, *args, **kwargs):
        # Checked before keras wraps the call, so the error stays one clear line.
        if getattr(inputs, "shape", None) is not None:
            self._check_input_shape(inputs.shape)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        self._check_input_shape(tuple(inputs.shape))
        return super().call(inputs, training=training, mask=mask)

    def compute_output_spec(self, inputs, training=None, mask=None):
        self._check_input_shape(inputs.shape)
        return super().compute_output_spec(inputs, training=training, mask=mask)

    def _base_config(self):
        """The config keys every encoder shares (`input_size`, `name`, `trainable`, `dtype`)."""
        input_size = self.input_size
        if isinstance(input_size, (tuple, list)):
            input_size = list(input_size)
        config = {"input_size": input_size, "name": self.name, "trainable": self.trainable}
        if self._dtype_arg is not None:
            config["dtype"] = keras.saving.serialize_keras_object(self._dtype_arg)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
