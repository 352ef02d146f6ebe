"""Choice of the `tf.distribute` strategy, XLA and precision for this machine."""

import json
import os

import tensorflow as tf

from ssl3d_keras.errors import ConfigError


def gpu_count():
    """Number of visible GPUs."""
    return len(tf.config.list_physical_devices("GPU"))


def make_strategy(name="auto"):
    """The distribution strategy for `name`.

    Args:
        name: "auto": `MultiWorkerMirroredStrategy` when the `TF_CONFIG`
            environment variable is set, `MirroredStrategy` on several GPUs,
            else the default (one-device) strategy. "default": the default
            strategy. "mirrored": `MirroredStrategy` over all GPUs, or over all
            logical CPU devices when there is no GPU (configure several with
            `tf.config.set_logical_device_configuration` before TensorFlow
            initialises). "multiworker": `MultiWorkerMirroredStrategy`.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ConfigError: unknown name, or TF_CONFIG does not parse.
    """
    if name == "auto":
        if os.environ.get("TF_CONFIG"):
            name = "multiworker"
        elif gpu_count() > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if gpu_count():
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus)
    if name == "multiworker":
        if os.environ.get("TF_CONFIG"):
            try:
                json.loads(os.environ["TF_CONFIG"])
            except json.JSONDecodeError as e:
                raise ConfigError("TF_CONFIG", f"environment variable does not parse as JSON: {e}. "
                                  f"Received: {os.environ['TF_CONFIG']!r}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError("strategy", "must be one of auto, default, mirrored, multiworker. "
                      f"Received: {name!r}")


def worker_role():
    """This process's place in a multi-worker cluster, from `TF_CONFIG`.

    The chief is the task of type "chief", or worker 0 when the cluster has no
    chief (TensorFlow's convention). It alone writes the run's outputs.

    Returns:
        `(is_chief, name)`: `(True, "chief")` without `TF_CONFIG` (one
        process is its own chief); otherwise e.g. `(False, "worker-1")`.

    Raises:
        ConfigError: TF_CONFIG does not parse, or names no task of this process.
    """
    if not os.environ.get("TF_CONFIG"):
        return True, "chief"
    try:
        config = json.loads(os.environ["TF_CONFIG"])
        task = config["task"]
        task_type, index = str(task["type"]), int(task.get("index", 0))
        has_chief = "chief" in config.get("cluster", {})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError("TF_CONFIG", "must be JSON with a cluster and this process's task, "
                          'e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                          f'"task": {{"type": "worker", "index": 0}}}} ({e}). '
                          f"Received: {os.environ['TF_CONFIG']!r}") from None
    chief = task_type == "chief" or (not has_chief and task_type == "worker" and index == 0)
    return chief, "chief" if chief else f"{task_type}-{index}"


def strategy_name(strategy):
    """Short name of a strategy: "default", "mirrored", "multiworker" or its class name."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multiworker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return "default"
    return type(strategy).__name__


def resolve_jit_compile(value="auto"):
    """`True`/`False` for the config value; "auto" is on for GPU only.

    XLA made 3D convolutions 6-14x slower on the CPUs we measured (docs/PERFORMANCE.md, "XLA on
    this CPU").
    """
    if value == "auto":
        return gpu_count() > 0
    return bool(value)


# CPU flags (Linux /proc/cpuinfo names) of native bfloat16 arithmetic.
NATIVE_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# The narrowest U-Net (filters of level 0) that mixed_bfloat16 trains faster than float32
# on a CPU with native bfloat16 (docs/PERFORMANCE.md, "Precision and memory").
BFLOAT16_MIN_BASE_FILTERS = 16


def cpu_flags():
    """The CPU's feature flags (`/proc/cpuinfo`, first processor); empty where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_precision(value="auto", *, encoder=None):
    """The Keras dtype policy name for the config value.

    "auto" follows what was measured (docs/PERFORMANCE.md, "Precision and
    memory"): on a GPU, "mixed_float16" (with loss scaling). On a CPU with
    native bfloat16 arithmetic (flags `avx512_bf16` or `amx_bf16`),
    "mixed_bfloat16" for U-Net encoders of at least
    `BFLOAT16_MIN_BASE_FILTERS` = 16 filters at level 0 (the paper's width),
    which trained every task 1.01-1.35x faster than float32 on a 2-core
    AVX512-BF16 CPU (rotation 1.19x at 32^3 and 1.27x at 64^3, exemplar
    1.24x, jigsaw 1.23x, CPC 1.35x, RPL 1.01x), never slower. "float32" for
    narrower encoders (base 8: 0.96-1.43x, slower or level for the smallest
    steps, so the quick run keeps its float32 numerics), for other
    architectures (not measured) and when the encoder is not given. A CPU
    without native bfloat16 emulates it, slower than float32: "float32".
    (mixed_float16 has no CPU kernels for 3D pooling: GPU only.)

    Args:
        value: "auto", "float32", "mixed_float16" or "mixed_bfloat16".
        encoder: the run's encoder table (`PretrainConfig.encoder`), which
            "auto" reads `architecture` and `base_filters` from; None when
            unknown.

    Returns:
        str, the policy name.

    Raises:
        ConfigError: an unknown value (key `precision`).
    """
    if value == "auto":
        if gpu_count():
            return "mixed_float16"
        if not NATIVE_BFLOAT16_FLAGS & cpu_flags() or encoder is None:
            return "float32"
        import inspect

        from ssl3d_keras.models.factory import DEFAULT_ARCHITECTURE
        from ssl3d_keras.models.unet import UNetEncoder

        if encoder.get("architecture", DEFAULT_ARCHITECTURE) != "unet":
            return "float32"
        default = inspect.signature(UNetEncoder).parameters["base_filters"].default
        base_filters = encoder.get("base_filters", default)
        wide = isinstance(base_filters, int) and base_filters >= BFLOAT16_MIN_BASE_FILTERS
        return "mixed_bfloat16" if wide else "float32"
    if value not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ConfigError("precision", "must be one of auto, float32, mixed_float16, "
                          f"mixed_bfloat16. Received: {value!r}")
    return value
