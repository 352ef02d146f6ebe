"""`ssl3d info`."""

import platform

import keras
import tensorflow as tf
from click.testing import CliRunner

from ssl3d_keras.cli.main import cli


def test_info_prints_versions_devices_tasks_and_defaults():
    result = CliRunner().invoke(cli, ["info"], catch_exceptions=False)
    assert result.exit_code == 0
    lines = dict(line.split(None, 1) for line in result.output.splitlines())
    assert lines["python"] == platform.python_version()
    assert lines["tensorflow"] == tf.__version__
    assert lines["keras"] == keras.__version__
    import nibabel
    import tensorflow_hub

    assert lines["nibabel"] == nibabel.__version__
    assert lines["tensorflow_hub"] == tensorflow_hub.__version__
    assert "CPU" in lines["devices"]
    for task in ("cpc", "exemplar", "jigsaw", "rotation", "rpl"):
        assert task in lines["tasks"]
    gpu = bool(tf.config.list_physical_devices("GPU"))
    assert lines["default_jit_compile"] == str(gpu)
    assert lines["default_precision"] == ("mixed_float16" if gpu else "float32")
    with open("/proc/cpuinfo") as f:
        native_bf16 = bool({"avx512_bf16", "amx_bf16"} & set(f.read().split()))
    paper = "mixed_float16" if gpu else ("mixed_bfloat16" if native_bf16 else "float32")
    assert lines["default_precision_paper_encoder"] == paper
