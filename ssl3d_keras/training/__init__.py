"""Pretraining: the custom training loop, its config, checkpoints and run directories.

Example:

>>> from ssl3d_keras.training import PretrainConfig, pretrain, load_run
>>> summary = pretrain(PretrainConfig(task="rotation", steps=50), "runs/rot")  # doctest: +SKIP
>>> task, config = load_run("runs/rot")                                        # doctest: +SKIP
"""

from ssl3d_keras.training.config import (
    DataConfig,
    OptimizerConfig,
    PhantomConfig,
    PretrainConfig,
)
from ssl3d_keras.training.loop import NonFiniteLossError, make_train_step, pretrain
from ssl3d_keras.training.run import load_run

__all__ = [
    "DataConfig",
    "NonFiniteLossError",
    "OptimizerConfig",
    "PhantomConfig",
    "PretrainConfig",
    "load_run",
    "make_train_step",
    "pretrain",
]
