"""One SavedModel that is both a TF Serving artifact and a reusable TF Hub module.

`model.export()` writes only serving endpoints: no `__call__`, no `training`
argument, no variable lists, so `hub.KerasLayer` cannot fine-tune it. We write
the TF2 "reusable SavedModel" interface by hand on a `tf.train.Checkpoint`
root (a public trackable that accepts arbitrary attributes):

- `__call__(inputs, training=False)`: the encoder features, traced for
  `training=True` (Dropout active, BatchNorm batch statistics and moving
  statistics updated in place) and `training=False`;
- `skips(inputs, training=False)`: a dict of the skip connections
  (`skip_1`..`skip_k`, `bottleneck`) plus `features`, for U-Net fine-tuning;
- `variables`, `trainable_variables`, `regularization_losses` (a list of
  argument-free functions, one per regularised weight);
- signatures `serving_default` (`{"features": ...}`) and `serving_skips`
  for TF Serving and `saved_model_cli`;
- the metadata as `assets.extra/ssl3d_metadata.json` (TF Serving ignores
  `assets.extra`), so the artifact describes itself.

Spatial dimensions are dynamic where the encoder allows (a functional encoder
built on `keras.Input((None, None, None, C))`).
"""

import json
import os

import keras
import tensorflow as tf

from ssl3d_keras.atomic import atomic_dir, replace_dir  # noqa: F401  (replace_dir: re-exported)
from ssl3d_keras.errors import ExportError

METADATA_NAME = "ssl3d_metadata.json"


def input_spec_of(encoder):
    """`tf.TensorSpec` of the encoder's input, batch always dynamic.

    Args:
        encoder: a functional `keras.Model` with one input `(batch, *spatial, C)`.

    Returns:
        `tf.TensorSpec([None, *spatial, C], tf.float32, name="inputs")`.
    """
    inputs = getattr(encoder, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ExportError(f"the encoder must be a functional keras.Model with exactly one input. "
                          f"Received: inputs={inputs!r}")
    shape = list(inputs[0].shape)
    if shape[-1] is None:
        raise ExportError(f"the encoder's channel count must be known. Received: input shape {shape}")
    return tf.TensorSpec([None, *shape[1:]], tf.float32, name="inputs")


def skips_model_of(encoder):
    """A model from the encoder's input to its named multi-scale outputs (shared weights).

    Uses `encoder.skips_model()` (every `PyramidEncoder` has it) and makes sure
    the `features` output is there. Returns `None` for a model without one.
    """
    if not hasattr(encoder, "skips_model"):
        return None
    model = encoder.skips_model()
    if not isinstance(model.output, dict):
        raise ExportError(f"encoder.skips_model() must return a model with a dict output. "
                          f"Received: {type(model.output).__name__}")
    outputs = dict(model.output)
    if "features" in outputs:
        return model
    outputs["features"] = encoder.output
    return keras.Model(encoder.input, outputs, name=f"{encoder.name}_skips")


def reusable_module(encoder):
    """Build the trackable root object saved by `save_savedmodel`.

    Args:
        encoder: a built functional `keras.Model`, `(batch, *spatial, C)` -> features.

    Returns:
        `(root, signatures)`: a `tf.train.Checkpoint` carrying the reusable
        SavedModel interface, and the dict of serving signatures.
    """
    spec = input_spec_of(encoder)
    skips = skips_model_of(encoder)

    @tf.function
    def call(inputs, training=False):
        return encoder(inputs, training=training)

    root = tf.train.Checkpoint()
    # Hub reads these lists; the raw tf.Variables (not the Keras wrappers) are
    # what every TF client expects.
    root.variables = [v.value for v in encoder.variables]
    root.trainable_variables = [v.value for v in encoder.trainable_variables]
    root.regularization_losses = _regularization_functions(encoder)
    for training in (False, True):
        call.get_concrete_function(spec, training=training)
    root.__call__ = call

    @tf.function(input_signature=[spec])
    def serve(inputs):
        return {"features": encoder(inputs, training=False)}

    signatures = {"serving_default": serve.get_concrete_function()}
    if skips is not None:
        @tf.function
        def call_skips(inputs, training=False):
            return skips(inputs, training=training)

        for training in (False, True):
            call_skips.get_concrete_function(spec, training=training)
        root.skips = call_skips

        @tf.function(input_signature=[spec])
        def serve_skips(inputs):
            return skips(inputs, training=False)

        signatures["serving_skips"] = serve_skips.get_concrete_function()
    return root, signatures


def _regularization_functions(encoder):
    functions = []
    for variable in encoder.trainable_weights:
        regularizer = getattr(variable, "regularizer", None)
        if regularizer is None:
            continue
        fn = tf.function(_penalty(variable, regularizer), input_signature=[])
        fn.get_concrete_function()
        functions.append(fn)
    return functions


def _penalty(variable, regularizer):
    def penalty():
        return tf.cast(regularizer(variable), tf.float32)

    return penalty


def save_savedmodel(encoder, path, *, metadata=None):
    """Write the Serving + TF Hub SavedModel of `encoder` to `path`, atomically.

    The SavedModel is written to a temporary folder next to `path`, then moved
    into place with `os.replace`, so `path` is either the old or the complete
    new export. An existing `path` is replaced.

    Args:
        encoder: a built functional `keras.Model` with input `(batch, D, H, W, C)`
            (or `(batch, H, W, C)`) and a features output.
        path: the folder to write.
        metadata: optional JSON-ready dict stored in the SavedModel.

    Returns:
        `path` as a string.

    Example:

    >>> from ssl3d_keras.export.savedmodel import save_savedmodel
    >>> save_savedmodel(encoder, "export/savedmodel")  # doctest: +SKIP
    """
    path = os.path.abspath(os.fspath(path))
    root, signatures = reusable_module(encoder)
    with atomic_dir(path) as target:
        tf.saved_model.save(root, str(target), signatures=signatures)
        if metadata is not None:
            extra = target / "assets.extra"
            extra.mkdir(exist_ok=True)
            with open(extra / METADATA_NAME, "w") as f:
                json.dump(metadata, f, indent=2, sort_keys=True)
    return path


def read_saved_metadata(path):
    """The metadata dict stored with the SavedModel at `path` (`{}` if there is none)."""
    file = os.path.join(os.fspath(path), "assets.extra", METADATA_NAME)
    if not os.path.isfile(file):
        return {}
    with open(file) as f:
        return json.load(f)
