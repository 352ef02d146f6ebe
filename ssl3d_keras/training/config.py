"""The configuration of a pretraining run: `PretrainConfig` and its parts.

Read it with `ssl3d_keras.config.from_dict` (an unknown key is a
`ConfigError` that names it). The defaults are the paper's where it
gives them (README, "The five tasks as built"): the U-Net encoder (16/32/64/128, 256 bottleneck, BatchNorm,
dropout 0.5), the tasks' own paper arguments, Adam with a constant learning
rate of 1e-4. The run length and data size are not the paper's (1000 epochs at
128^3 belong to the zoo recipes): whole 64^3 phantoms, batch 4, 300 steps.

`quick_config(task)` is the small demonstration that `ssl3d pretrain TASK`
runs with no options: it finishes in a few minutes on two CPU cores and its
proxy accuracy clearly beats chance.

Example:

>>> from ssl3d_keras.config import from_dict
>>> from ssl3d_keras.training import PretrainConfig
>>> config = from_dict(PretrainConfig, {"task": "jigsaw", "steps": 50,
...                                     "optimizer": {"learning_rate": 1e-3}})
"""

import copy
import dataclasses
from typing import Literal

from ssl3d_keras.config import check_choice, check_int, check_number
from ssl3d_keras.errors import ConfigError

# A reduced U-Net encoder for the quick demonstration run; the paper's is
# depth 4, base 16. Depth 2 (inputs >= 8 voxels) also fits the 13^3 patches of
# jigsaw and rpl at 48^3.
QUICK_ENCODER = {"depth": 2, "base_filters": 8, "norm": "batch", "dropout": 0.0}

# The demonstration run (`ssl3d pretrain TASK` with no options): small heads
# without dropout, batch 16 and a higher learning rate than the paper's, so a
# few hundred steps learn visibly.
_QUICK_COMMON = {
    "encoder": QUICK_ENCODER,
    "data": {"phantoms": {"n": 16, "size": 48}, "input_size": 32},
    "optimizer": {"learning_rate": 3e-3},
    "steps": 300,
    "batch_size": 16,
    "checkpoint_every": 100,
    "log_every": 10,
}
_SMALL_HEAD = {"head_units": [64], "head_dropout": 0.0}
QUICK_TASK_SETTINGS = {
    "rotation": {"task_config": _SMALL_HEAD},
    "jigsaw": {"task_config": _SMALL_HEAD, "data": {"input_size": 48}, "batch_size": 8},
    "rpl": {"task_config": _SMALL_HEAD, "data": {"input_size": 48}},
    # 64 patches of 8^3 per example at 32^3
    "cpc": {"task_config": {"code_size": 64, "context_units": 64}, "batch_size": 8},
    # Batch 16 gives each anchor 15 other scans to be told apart from and a less
    # noisy accuracy; at 3e-3 its triplet loss oscillated (final accuracy 0.71 vs
    # 0.86 at 1e-3, tools/pretraining-defaults.md).
    "exemplar": {"task_config": {"embedding_size": 64},
                 "optimizer": {"learning_rate": 1e-3}},
}


def _merge(base, extra):
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in (
                "task_config", "encoder"):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def quick_config(task):
    """The demonstration config of `task` as a plain dict (for `from_dict`).

    A demonstration setting, not the paper's: a reduced encoder (depth 2,
    base 8), small heads, 32^3 or 48^3 crops of 16 phantoms of 48^3, batch 16
    (8 for jigsaw and cpc), Adam 3e-3 (1e-3 for exemplar), 300 steps. Each
    task finishes in a few minutes on two CPU cores, with a proxy accuracy
    clearly above chance (measured in tools/pretraining-defaults.md). The
    paper's settings are the `PretrainConfig` defaults and the zoo recipes.

    Returns a new nested dict each call: changing it never changes the defaults.
    """
    merged = _merge({"task": task, **_QUICK_COMMON}, QUICK_TASK_SETTINGS.get(task, {}))
    return copy.deepcopy(merged)


@dataclasses.dataclass
class PhantomConfig:
    """Synthetic phantoms used when `data.path` is None.

    Args:
        n: number of phantom volumes.
        size: edge length of each phantom volume (voxels).
        channels: number of channels.
        seed: seed of the phantom generator.
    """

    n: int = 16
    size: int = 64
    channels: int = 1
    seed: int = 0


@dataclasses.dataclass
class ResolvedData:
    """Facts of the data a run reads, recorded in its `config.json` when it starts.

    Filled in by the run (never set by hand), so that loading, exporting or
    fine-tuning a run needs only its directory, not its data folder.

    Args:
        input_shape: shape of one example given to the task, `(*spatial, C)`.
        channels: number of input channels (the last entry of `input_shape`).
        examples_per_epoch: volumes (or 2D slices) x crops per volume.
        channel_names: names of the channels in order, or None.
        preprocessing: how the prepared data were preprocessed (from their
            manifest), `{}` for phantoms.
    """

    input_shape: list[int]
    channels: int
    examples_per_epoch: int
    channel_names: list[str] | None = None
    preprocessing: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DataConfig:
    """Where the volumes come from and how examples are cut from them.

    Args:
        path: a prepared shard folder (with `manifest.json`), a raw dataset
            (NIfTI folder, Decathlon, BraTS: prepared into `OUT/prepared` first),
            or None for synthetic phantoms.
        prepared: the prepared shard folder actually read; filled in when the run
            resolves its config (equal to `path` when `path` is already prepared).
        layout: layout of a raw dataset for `prepare_dataset` ("auto" detects it).
        preprocess: `PreprocessConfig` fields for preparing a raw dataset.
        include_unlabelled: a raw Decathlon dataset also gives its unlabelled
            `imagesTs` cases (pretraining needs no labels).
        holdout: cases a raw dataset leaves out before it is prepared, so
            pretraining never sees the downstream test cases:
            `{test_fraction = 0.2, seed = 0}` (the test split `ssl3d finetune`
            draws with those split values) or `{cases = "splits.json"}` (a
            fine-tuning run's splits.json, or a JSON list of ids). The
            held-out ids are logged and recorded in the prepared manifest
            (`held_out`). None holds nothing out.
        phantoms: the phantoms used when `path` is None.
        dim: 3 for volumes, 2 for images (3D sources are cut into 2D slices
            along `slice_axis`: the paper's 2D-slice baseline).
        slice_axis: axis of 3D volumes sliced when `dim` is 2.
        input_size: edge of the random crop given to the task (the task's input
            shape); None uses whole volumes (they must all have one shape).
        crops_per_volume: examples cut from each volume before the next one.
        cache: keep decoded volumes in memory after the first pass: True,
            False (stream from the shards every epoch: memory stays flat however
            large the data) or "auto" (the default: cache when the decoded data
            fit in `CACHE_BUDGET_FRACTION` of this machine's memory, at most
            `CACHE_BUDGET_MAX_BYTES`; see `training.run.resolve_cache`).
        shuffle_volumes: size of the volume shuffle buffer.
        service: `HOST:PORT` of a tf.data service dispatcher whose workers run
            the input pipeline (`ssl3d data-service`), or None to run it here.
            Needs a dataset on disk that the workers can read.
        service_sharding: "dynamic" (the workers take whole epochs in turn:
            every example made once, from its usual seed) or "off" (every
            worker runs the whole pipeline).
        resolved: a `ResolvedData`, filled in when the run resolves its config.
    """

    path: str | None = None
    prepared: str | None = None
    layout: str = "auto"
    preprocess: dict = dataclasses.field(default_factory=dict)
    include_unlabelled: bool = False
    holdout: dict | None = None
    phantoms: PhantomConfig = dataclasses.field(default_factory=PhantomConfig)
    dim: Literal[2, 3] = 3
    slice_axis: int = 0
    input_size: int | None = None
    crops_per_volume: int = 1
    cache: bool | Literal["auto"] = "auto"
    shuffle_volumes: int = 64
    service: str | None = None
    service_sharding: Literal["dynamic", "off"] = "dynamic"
    resolved: ResolvedData | None = None


@dataclasses.dataclass
class OptimizerConfig:
    """Optimiser and learning-rate schedule.

    Args:
        name: "adam" (the paper) or "adamw" (decoupled weight decay).
        learning_rate: peak learning rate (the paper: 1e-4; CPC on UK Biobank 1e-3).
        weight_decay: decoupled weight decay, or None for none (AdamW default 0.004).
        schedule: "constant" (the paper) or "cosine" (cosine decay to
            `alpha * learning_rate` over the run, after `warmup_steps` of linear warm-up).
        warmup_steps: linear warm-up steps from 0 (cosine schedule only).
        alpha: final learning rate of the cosine schedule, as a fraction of the peak.
        clipnorm: clip each gradient to this norm, or None.
        global_clipnorm: clip all gradients together to this global norm, or None.
    """

    name: Literal["adam", "adamw"] = "adam"
    learning_rate: float = 1e-4
    weight_decay: float | None = None
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    alpha: float = 0.0
    clipnorm: float | None = None
    global_clipnorm: float | None = None


@dataclasses.dataclass
class MonitorConfig:
    """What a pretraining run checks while it trains (off by default).

    Args:
        every: steps between checks (and one at the end); 0 turns monitoring off.
        validation_examples: held-out proxy examples scored at each check.
        validation_volumes: held-out phantoms drawn for them (phantom runs).
        validation_data: a prepared folder of held-out volumes (runs on real
            data; without it, real-data runs skip the held-out proxy score).
        probe: also run the downstream probe at each check.
        probe_data: a labelled dataset for the probe (prepared or raw); None
            uses labelled phantoms.
        probe_cases: labelled phantoms of the probe (when `probe_data` is None).
        probe_steps: decoder steps of each probe fit.
        probe_patch_size: training patch of the probe.
    """

    every: int = 0
    validation_examples: int = 32
    validation_volumes: int = 8
    validation_data: str | None = None
    probe: bool = False
    probe_data: str | None = None
    probe_cases: int = 10
    probe_steps: int = 60
    probe_patch_size: int = 32


@dataclasses.dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (stored as the run's `config.json`).

    Args:
        task: name of the proxy task (`ssl3d_keras.tasks.list_tasks()`).
        task_config: keyword arguments of the task (grid, jitter, ...); the
            task's paper defaults apply to keys not given.
        encoder: the encoder table: `architecture` ("unet", the default, or
            "densenet121" for 2D) and that network's arguments
            (`ssl3d_keras.models.build_encoder`); `input_channels` and `dim` come
            from the data. `{}` is the paper's U-Net encoder.
        data: a `DataConfig`.
        optimizer: an `OptimizerConfig`.
        steps: number of optimisation steps.
        epochs: if set, `steps` is computed from it (examples per epoch = volumes
            x `crops_per_volume`, divided by `batch_size`, rounded up).
        batch_size: global batch size (split evenly across replicas).
        seed: seed of weight initialisation, dropout and the data order.
        precision: "auto" (`training.strategy.resolve_precision`: mixed_float16
            on GPU; on a CPU with native bfloat16, mixed_bfloat16 for U-Net
            encoders of base_filters >= 16, else float32), "float32",
            "mixed_float16" (with dynamic loss scaling) or "mixed_bfloat16".
        strategy: "auto" (MultiWorkerMirrored when TF_CONFIG is set, Mirrored on
            several GPUs, else the default strategy), "default", "mirrored"
            (all GPUs, or all logical CPU devices when there is no GPU) or "multiworker".
        jit_compile: XLA-compile the train step; "auto" turns it on for GPU only
            (XLA 3D convolutions were 7-14x slower on the CPUs we measured).
        checkpoint_every: save a checkpoint every this many steps (and at the end,
            and on SIGINT/SIGTERM).
        keep_checkpoints: how many recent checkpoints to keep.
        log_every: write metrics.csv / TensorBoard every this many steps
            (values are means over the steps since the last log).
        monitor: a `MonitorConfig`: held-out proxy scores and the downstream
            probe every `monitor.every` steps, and the best checkpoint (off by
            default).
        on_nonfinite: what a NaN/Inf loss or update does: "stop" (the default:
            the run stops, its last good checkpoint kept) or "skip" (the step's
            update is undone and counted; the run goes on).
        max_nonfinite_skips: with "skip", the run still stops after this many
            non-finite steps in a row.
        resumed_changes: filled in by the run (never set by hand): one record per
            key changed on resume (`step`, `key`, `old`, `new`).
    """

    task: str = "rotation"
    task_config: dict = dataclasses.field(default_factory=dict)
    encoder: dict = dataclasses.field(default_factory=dict)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    steps: int = 300
    epochs: int | None = None
    batch_size: int = 4
    seed: int = 0
    precision: Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"] = "auto"
    strategy: Literal["auto", "default", "mirrored", "multiworker"] = "auto"
    jit_compile: bool | Literal["auto"] = "auto"
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    log_every: int = 10
    monitor: MonitorConfig = dataclasses.field(default_factory=MonitorConfig)
    on_nonfinite: Literal["stop", "skip"] = "stop"
    max_nonfinite_skips: int = 10
    resumed_changes: list[dict] = dataclasses.field(default_factory=list)


# Seeds reach `numpy.random.seed`, which takes 0 <= seed < 2**32 (TensorFlow's
# stateless seeds take any int64, so numpy is the narrower bound).
MAX_SEED = 2**32 - 1
# Step counts and sizes are stored in int64 TensorFlow variables and tensors.
MAX_INT = 2**63 - 1
# make_phantom draws its head in at least 8 voxels per axis.
MIN_PHANTOM_SIZE = 8


def validate(config):
    """Check the values of a `PretrainConfig` that types alone cannot.

    Every key is checked before any work starts (no data read, no model
    built); the checks that need the data's input shape are in
    `ssl3d_keras.training.run.check_config`.

    Raises:
        ConfigError: naming the first invalid key and the value received.
    """
    for key, value in (("task_config", config.task_config), ("encoder", config.encoder),
                       ("data.preprocess", config.data.preprocess)):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a table of keys. Received: {value!r}")
    if not isinstance(config.task, str) or not config.task:
        raise ConfigError("task", f"expected a task name. Received: {config.task!r}")
    monitor = config.monitor
    check_int("monitor.every", monitor.every, 0, MAX_INT)
    for key in ("validation_examples", "validation_volumes", "probe_cases", "probe_steps",
                "probe_patch_size"):
        check_int(f"monitor.{key}", getattr(monitor, key), 1, MAX_INT)
    counts = {
        "steps": config.steps,
        "batch_size": config.batch_size,
        "checkpoint_every": config.checkpoint_every,
        "keep_checkpoints": config.keep_checkpoints,
        "log_every": config.log_every,
        "max_nonfinite_skips": config.max_nonfinite_skips,
        "data.crops_per_volume": config.data.crops_per_volume,
        "data.shuffle_volumes": config.data.shuffle_volumes,
        "data.phantoms.n": config.data.phantoms.n,
        "data.phantoms.channels": config.data.phantoms.channels,
    }
    if config.epochs is not None:
        counts["epochs"] = config.epochs
    if config.data.input_size is not None:
        counts["data.input_size"] = config.data.input_size
    for key, value in counts.items():
        check_int(key, value, 1, MAX_INT)
    check_int("data.phantoms.size", config.data.phantoms.size, MIN_PHANTOM_SIZE, MAX_INT)
    check_int("seed", config.seed, 0, MAX_SEED)
    check_int("data.phantoms.seed", config.data.phantoms.seed, 0, MAX_SEED)
    check_choice("data.slice_axis", config.data.slice_axis, (0, 1, 2))
    for key, value in (("data.path", config.data.path),
                       ("monitor.validation_data", monitor.validation_data),
                       ("monitor.probe_data", monitor.probe_data)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            # Path("") is the working directory: never read it by accident.
            raise ConfigError(key, f"expected a folder path or None. Received: {key}={value!r}")
    check_choice("on_nonfinite", config.on_nonfinite, ("stop", "skip"))
    _validate_service(config.data)
    _validate_optimizer(config.optimizer)
    for key in ("input_shape", "encoder"):
        if key in config.task_config:
            raise ConfigError(f"task_config.{key}",
                              "is set by the run (from data and encoder), not in task_config. "
                              f"Received: {config.task_config[key]!r}")
    if (config.data.path is None and config.data.input_size is not None
            and config.data.input_size > config.data.phantoms.size):
        raise ConfigError("data.input_size",
                          f"is larger than the phantoms (data.phantoms.size="
                          f"{config.data.phantoms.size}). Received: {config.data.input_size}")
    return config


def _validate_service(data):
    from ssl3d_keras.data.service import check_address, check_sharding

    check_sharding(data.service_sharding)
    if data.service is None:
        return
    check_address(data.service)
    if data.path is None:
        raise ConfigError("data.service", "needs a dataset on disk (data.path) that the service "
                          "workers can read; the phantom generator runs Python code, which "
                          f"they cannot. Received: data.service={data.service!r} with phantoms")


def _validate_optimizer(optimizer):
    check_number("optimizer.learning_rate", optimizer.learning_rate, low=0, low_open=True)
    if optimizer.weight_decay is not None:
        check_number("optimizer.weight_decay", optimizer.weight_decay, low=0)
    check_int("optimizer.warmup_steps", optimizer.warmup_steps, 0, MAX_INT)
    check_number("optimizer.alpha", optimizer.alpha, low=0, high=1)
    for key in ("clipnorm", "global_clipnorm"):
        value = getattr(optimizer, key)
        if value is not None:
            check_number(f"optimizer.{key}", value, low=0, low_open=True)
    if optimizer.clipnorm is not None and optimizer.global_clipnorm is not None:
        raise ConfigError("optimizer.clipnorm",
                          "set only one of clipnorm and global_clipnorm. Received both: "
                          f"{optimizer.clipnorm!r}, {optimizer.global_clipnorm!r}")
