"""Rematerialisation (gradient checkpointing) of a run of layers: `recompute`.

`tf.recompute_grad` keeps only the input of a segment for the backward pass and
runs the segment again to get its gradients, trading about one more forward
pass for the memory of every activation inside it. Run naively, the second
forward pass is not the first one again:

- BatchNormalization would update its moving statistics twice per step;
- Dropout would draw a new mask, so the gradients would belong to another
  network than the one whose loss was computed.

`recompute` runs the second pass inside a `keras.StatelessScope`, which drops
every variable update (the moving statistics, the seed generators' states)
and reads each seed generator's state as it was before the first pass, so the
recomputation draws the same dropout masks. Loss, gradients and moving
statistics equal those of the plain forward pass.

`keras.RematScope` is not used: under the TensorFlow backend in graph mode it
fails on keyword arguments ("The custom_gradient decorator currently supports
keywords arguments only when eager execution is enabled", Keras 3.15), so
`training` reaches the layers by closure here.

Example:

>>> import keras, numpy as np, tensorflow as tf
>>> layers = [keras.layers.Dense(4), keras.layers.Dropout(0.5, seed=1)]
>>> def segment(x):
...     for layer in layers:
...         x = layer(x, training=True)
...     return x
>>> x = tf.ones((2, 3))
>>> with tf.GradientTape() as tape:
...     tape.watch(x)
...     y = recompute(segment, x, layers)
>>> tape.gradient(y, x).shape
TensorShape([2, 3])
"""

import keras
import tensorflow as tf

__all__ = ["recompute"]


def recompute(segment, inputs, layers):
    """`segment(inputs)`, with its activations recomputed in the backward pass.

    Args:
        segment: callable of one tensor returning one tensor; it calls
            `layers` (and reads their weights), with `training` bound by
            closure (`tf.recompute_grad` takes no keyword arguments in graph
            mode).
        inputs: tensor, the only activation kept for the backward pass.
        layers: the layers `segment` calls; the seed generators of those
            with one (Dropout, GaussianNoise, ...) are replayed so the
            recomputation draws the same random numbers.

    Returns:
        The output of `segment(inputs)`; its gradients (to `inputs` and to
        the layers' weights) equal those of the plain call.
    """
    generators = [layer.seed_generator for layer in layers
                  if getattr(layer, "seed_generator", None) is not None]
    # Seed states before the first pass (ordered before its updates in graph mode by
    # TensorFlow's automatic control dependencies on the state variable).
    replay = [(g.state, tf.identity(g.state.value)) for g in generators]
    passes = []

    def forward(x):
        if not passes:  # the forward pass: updates happen once, here
            passes.append("forward")
            return segment(x)
        # The recomputation: no variable update, the first pass's random numbers.
        with keras.StatelessScope(state_mapping=replay):
            return segment(x)

    return tf.recompute_grad(forward)(inputs)
