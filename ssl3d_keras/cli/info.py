"""`ssl3d info`: versions, devices, tasks, and the defaults this machine gets."""

import platform

import click


def _version(module_name):
    import importlib

    try:
        return getattr(importlib.import_module(module_name), "__version__", "unknown")
    except Exception as e:  # an unimportable optional package is reported, not fatal
        return f"not importable ({type(e).__name__}: {e})"


def collect_info():
    """Dict of versions, devices, registered tasks and the `auto` defaults here."""
    import keras
    import tensorflow as tf

    from ssl3d_keras import __version__, tasks
    from ssl3d_keras.training.config import PretrainConfig
    from ssl3d_keras.training.strategy import gpu_count, resolve_jit_compile, resolve_precision

    return {
        "ssl3d_keras": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "nibabel": _version("nibabel"),
        "tensorflow_hub": _version("tensorflow_hub"),
        # Runs write TensorBoard event files without it; it is only the viewer.
        "tensorboard": _version("tensorboard"),
        "devices": [f"{d.device_type}: {d.name}" for d in tf.config.list_logical_devices()],
        "gpus": gpu_count(),
        "tasks": tasks.list_tasks(),
        "default_precision": resolve_precision("auto"),
        # "auto" also reads the encoder: the paper's (the PretrainConfig default) may differ.
        "default_precision_paper_encoder": resolve_precision(
            "auto", encoder=PretrainConfig().encoder),
        "default_jit_compile": resolve_jit_compile("auto"),
        "mixed_precision_default": resolve_precision("auto") != "float32",
    }


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
def info():
    """Print versions (python, tensorflow, keras, nibabel, tensorflow_hub,
    tensorboard), the
    devices TensorFlow sees, the registered proxy tasks, and whether XLA and
    mixed precision are on by default on this machine (precision/jit "auto")."""
    data = collect_info()
    width = max(len(k) for k in data)
    for key, value in data.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "(none)"
        click.echo(f"{key:<{width}}  {value}")
