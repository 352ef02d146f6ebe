"""Optimiser, learning-rate schedule and mixed-precision set-up."""


import keras
import tensorflow as tf

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models.dtype import dtype_policy  # noqa: F401  (re-exported)


def make_schedule(config, total_steps):
    """The learning rate (a float or a schedule) of an `OptimizerConfig`.

    Args:
        config: an `OptimizerConfig`.
        total_steps: steps of the whole run (the cosine decays over the steps
            after the warm-up).

    Returns:
        A float for "constant", or a `keras.optimizers.schedules.CosineDecay`
        that warms up linearly from 0 to `learning_rate` over `warmup_steps`,
        then decays to `alpha * learning_rate` at `total_steps`.
    """
    if config.schedule == "constant":
        return float(config.learning_rate)
    if config.schedule == "cosine":
        warmup = int(config.warmup_steps)
        if warmup >= total_steps:
            raise ConfigError("optimizer.warmup_steps",
                              f"must be smaller than the run's steps ({total_steps}). "
                              f"Received: {warmup}")
        if warmup == 0:
            return keras.optimizers.schedules.CosineDecay(
                config.learning_rate, decay_steps=total_steps, alpha=config.alpha)
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=total_steps - warmup, alpha=config.alpha,
            warmup_target=config.learning_rate, warmup_steps=warmup)
    raise ConfigError("optimizer.schedule",
                      f"must be 'constant' or 'cosine'. Received: {config.schedule!r}")


def make_optimizer(config, total_steps, precision="float32"):
    """A Keras optimiser for an `OptimizerConfig`.

    Create it inside the strategy's scope. With `precision="mixed_float16"` it
    is wrapped in `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling;
    the train step calls `optimizer.scale_loss`).

    Note: Keras applies `clipnorm`/`global_clipnorm` to each replica's gradient
    before the cross-replica sum, so with several replicas the clip acts on
    each replica's share of the gradient.
    """
    kwargs = {"learning_rate": make_schedule(config, total_steps)}
    if config.clipnorm is not None:
        kwargs["clipnorm"] = config.clipnorm
    if config.global_clipnorm is not None:
        kwargs["global_clipnorm"] = config.global_clipnorm
    if config.name == "adam":
        optimizer = keras.optimizers.Adam(weight_decay=config.weight_decay, **kwargs)
    elif config.name == "adamw":
        decay = 0.004 if config.weight_decay is None else config.weight_decay
        optimizer = keras.optimizers.AdamW(weight_decay=decay, **kwargs)
    else:
        raise ConfigError("optimizer.name", f"must be 'adam' or 'adamw'. Received: {config.name!r}")
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def current_learning_rate(optimizer):
    """The learning rate the optimiser uses at its current iteration (a float)."""
    rate = optimizer.learning_rate
    if isinstance(rate, keras.Variable):
        rate = rate.value  # a tf.Variable, or a MirroredVariable under MirroredStrategy
    return float(tf.convert_to_tensor(rate))


