"""The configuration of a fine-tuning run: `FinetuneConfig` and its parts.

Read it with `ssl3d_keras.config.from_dict` (an unknown key is a `ConfigError`
naming it). The defaults are a small demonstration on labelled phantoms that
runs in a few minutes on two CPU cores; the paper's protocol values (warm-up
of 25 of 400 epochs at learning rate 1e-3, batch 2, clipnorm 1 for pancreas)
are in METHODS.md and go in through a config file or `--set`.

Example:

>>> from ssl3d_keras.config import from_dict
>>> config = from_dict(FinetuneConfig, {"encoder": "exports/rot", "steps": 200,
...                                     "split": {"label_fraction": 0.25}})
"""

import dataclasses
from typing import Literal

from ssl3d_keras.errors import ConfigError

__all__ = ["FinetuneConfig", "FinetuneData", "FinetunePhantoms", "FinetuneOptimizer",
           "EvaluationConfig", "SplitConfig", "PHANTOM_LABEL_MAP", "SCRATCH_ENCODER", "validate"]

# The phantom downstream task: the small deep structures and the lesions, the parts a
# pretrained encoder could help with (skin, skull and brain are trivially separable).
PHANTOM_LABEL_MAP = {"4": 1, "5": 2, "6": 3, "11": 4}

# The encoder trained from scratch when no pretrained one is named: the demonstration
# encoder that `ssl3d pretrain TASK` trains by default, so the two compare like for like.
SCRATCH_ENCODER = {"depth": 2, "base_filters": 8, "norm": "batch", "dropout": 0.0}


@dataclasses.dataclass
class FinetunePhantoms:
    """Labelled phantoms used when `data.path` is None (seeded apart from pretraining's).

    Args:
        n: number of phantom cases.
        size: edge length of each phantom (voxels).
        channels: number of channels.
        seed: seed of the phantom generator (pretraining phantoms use 0).
    """

    n: int = 40
    size: int = 48
    channels: int = 1
    seed: int = 1000


@dataclasses.dataclass
class FinetuneData:
    """The labelled data and what is segmented in it.

    Args:
        path: a prepared shard folder, a raw dataset (NIfTI folder, Decathlon,
            BraTS; prepared into `OUT/prepared` first), or None for phantoms.
        prepared: the prepared folder actually read (filled in by the run).
        layout: layout of a raw dataset ("auto" detects it).
        preprocess: `PreprocessConfig` fields for preparing a raw dataset.
        phantoms: the phantoms used when `path` is None.
        label_map: dict source label (str) -> training class, or None for the
            labels as stored; source values not listed become background.
            Phantoms default to `PHANTOM_LABEL_MAP`.
        class_names: dict class (str) -> name, or None (from the dataset).
        num_classes: classes including background, or None (from the dataset's
            declared labels, or the label map; never from a batch).
        dim: 3 for a 3D model; 2 for a slice-wise 2D model on 3D volumes (the
            paper's 2D baseline), evaluated on the same whole 3D cases.
        slice_axis: the axis 2D slices are cut along when `dim` is 2.
        regions: "auto" (BraTS regions for BraTS data), "brats" or "none".
        cache: keep the training volumes in memory after the first pass.
    """

    path: str | None = None
    prepared: str | None = None
    layout: str = "auto"
    preprocess: dict = dataclasses.field(default_factory=dict)
    phantoms: FinetunePhantoms = dataclasses.field(default_factory=FinetunePhantoms)
    label_map: dict | None = None
    class_names: dict | None = None
    num_classes: int | None = None
    dim: Literal[2, 3] = 3
    slice_axis: int = 0
    regions: Literal["auto", "brats", "none"] = "auto"
    cache: bool = True


@dataclasses.dataclass
class SplitConfig:
    """Test / validation / train split (see `ssl3d_keras.downstream.splits`).

    Args:
        label_fraction: share of the labelled pool trained on, in (0, 1].
        repeat: which seeded subset of the pool.
        seed: split seed; the test and validation cases depend on it alone.
        test_fraction: share of the cases held out for testing.
        validation_fraction: share of the rest used to pick the best checkpoint.
    """

    label_fraction: float = 1.0
    repeat: int = 0
    seed: int = 0
    test_fraction: float = 0.2
    validation_fraction: float = 0.1


@dataclasses.dataclass
class FinetuneOptimizer:
    """Adam for the fine-tuning phases.

    Args:
        learning_rate: learning rate while the encoder is frozen, and of `full`.
        unfrozen_learning_rate: learning rate of the fresh optimiser after a
            warm-up (None: `learning_rate`).
        clipnorm: gradient norm clip (the authors' fine-tuning configs use 1).
        weight_decay: Adam weight decay, or None.
    """

    learning_rate: float = 1e-3
    unfrozen_learning_rate: float | None = None
    clipnorm: float | None = 1.0
    weight_decay: float | None = None


@dataclasses.dataclass
class EvaluationConfig:
    """Whole-volume sliding-window evaluation.

    Args:
        window: window edge (None: the training patch size).
        overlap: overlap of neighbouring windows in [0, 1).
        batch_size: windows per forward pass.
        blend: "gaussian" importance weighting or "constant".
        validate_every: steps between validation scores (0: only at the end).
        write_predictions: write each test case's prediction as NIfTI on its
            source file's grid under `predictions/`.
    """

    window: int | None = None
    overlap: float = 0.5
    batch_size: int = 4
    blend: Literal["gaussian", "constant"] = "gaussian"
    validate_every: int = 100
    write_predictions: bool = True


@dataclasses.dataclass
class FinetuneConfig:
    """A fine-tuning run: encoder, data, split, schedule and evaluation.

    Args:
        task: "segmentation" (U-Net decoder on the encoder's skips) or
            "classification" (pooled features and a head, e.g. retinopathy grades).
        encoder: a handle `load_encoder` takes (preset, export or SavedModel
            folder, `.tar.gz`, zoo name, `URL#sha256=`), or None with `scratch`.
        scratch: fresh weights. With `encoder` set, the same architecture as that
            encoder (a preset); without it, `scratch_encoder`.
        scratch_encoder: the encoder table (`encoder` of a PretrainConfig) used
            for scratch runs without a handle.
        adapt_channels: how a pretrained first convolution is mapped when the
            data has another channel count ("mean", "repeat", "zero"), or None
            to refuse (the error says how to allow it).
        schedule: "frozen" (encoder and its BatchNorm frozen throughout),
            "warmup" (frozen for `warmup_steps`, then all layers with a fresh
            optimiser), "full" (all layers from the start), or "auto" (the
            default: "warmup" for a pretrained encoder, "full" from scratch,
            since freezing random weights would only take steps from scratch).
        warmup_steps: frozen steps of "warmup".
        steps: optimisation steps in all (scratch gets the same budget).
        batch_size: patches per step.
        patch_size: edge of the training patch (cube, or square in 2D).
        foreground_share: share of patches centred on a foreground voxel.
        loss: "dice_ce" (soft Dice over the foreground + cross-entropy, the
            nnU-Net default) or "dice" (soft Dice only, the paper's).
        head: classification head, "softmax" or "ordinal" (cumulative grades).
        optimizer, evaluation, split, data: see their classes.
        seed: seed of weights, patches and order (the split has its own).
        checkpoint_every: steps between checkpoints.
        log_every: steps between log lines.
    """

    task: Literal["segmentation", "classification"] = "segmentation"
    encoder: str | None = None
    scratch: bool = False
    scratch_encoder: dict = dataclasses.field(default_factory=lambda: dict(SCRATCH_ENCODER))
    adapt_channels: Literal["mean", "repeat", "zero"] | None = None
    schedule: Literal["auto", "frozen", "warmup", "full"] = "auto"
    warmup_steps: int = 50
    steps: int = 300
    batch_size: int = 4
    patch_size: int = 32
    foreground_share: float = 1 / 3
    loss: Literal["dice_ce", "dice"] = "dice_ce"
    head: Literal["softmax", "ordinal"] = "softmax"
    optimizer: FinetuneOptimizer = dataclasses.field(default_factory=FinetuneOptimizer)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    data: FinetuneData = dataclasses.field(default_factory=FinetuneData)
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10


def validate(config):
    """Check the values a dataclass cannot; returns the config.

    Raises:
        ConfigError: the first invalid value, naming its key.
    """
    if config.encoder is None and not config.scratch:
        raise ConfigError("encoder", "name a pretrained encoder (a preset, export, SavedModel, "
                          ".tar.gz, zoo name or URL) or train from scratch. Received: "
                          "encoder=None, scratch=False")
    if config.schedule == "auto":
        config.schedule = "full" if config.scratch else "warmup"
    for key, value, low in (("steps", config.steps, 1), ("batch_size", config.batch_size, 1),
                            ("patch_size", config.patch_size, 4),
                            ("checkpoint_every", config.checkpoint_every, 1),
                            ("log_every", config.log_every, 1),
                            ("warmup_steps", config.warmup_steps, 0),
                            ("evaluation.batch_size", config.evaluation.batch_size, 1),
                            ("evaluation.validate_every", config.evaluation.validate_every, 0)):
        if int(value) < low:
            raise ConfigError(key, f"must be >= {low}. Received: {value}")
    if config.schedule == "warmup" and config.warmup_steps >= config.steps:
        raise ConfigError("warmup_steps", f"must be smaller than steps ({config.steps}) for the "
                          f"warmup schedule. Received: {config.warmup_steps}")
    if not 0 <= config.foreground_share <= 1:
        raise ConfigError("foreground_share", f"must be in [0, 1]. Received: "
                          f"{config.foreground_share}")
    if not 0 <= config.evaluation.overlap < 1:
        raise ConfigError("evaluation.overlap", f"must be in [0, 1). Received: "
                          f"{config.evaluation.overlap}")
    if config.data.slice_axis not in (0, 1, 2):
        raise ConfigError("data.slice_axis", f"must be 0, 1 or 2. Received: "
                          f"{config.data.slice_axis}")
    if config.data.num_classes is not None and config.data.num_classes < 2:
        raise ConfigError("data.num_classes", "must be >= 2 (background and one class). "
                          f"Received: {config.data.num_classes}")
    if config.optimizer.learning_rate <= 0:
        raise ConfigError("optimizer.learning_rate", f"must be > 0. Received: "
                          f"{config.optimizer.learning_rate}")
    return config
