"""A DenseNet-121 encoder end to end: pretrain -> export -> load_encoder, preset and SavedModel."""

import numpy as np
import pytest
from click.testing import CliRunner

from ssl3d_keras.cli.main import cli
from ssl3d_keras.export import export_run, load_encoder
from ssl3d_keras.export.exporter import export_encoder
from ssl3d_keras.models import DenseNetEncoder


def test_preset_round_trip_and_metadata(tmp_path, rng):
    encoder = DenseNetEncoder(input_channels=3)
    x = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
    expected = encoder(x, training=False)
    written = export_encoder(encoder, tmp_path / "exp", formats="preset")
    meta = written["metadata"]
    assert meta["encoder"]["class_name"] == "DenseNetEncoder"
    assert meta["input"]["shape"] == [None, None, None, 3]
    assert (meta["input"]["dim"], meta["input"]["min_input_size"],
            meta["input"]["divisible_by"]) == (2, 32, 32)
    assert meta["outputs"]["features"] == {"stride": 32, "channels": 1024}
    assert {k: v["stride"] for k, v in meta["outputs"]["skips"].items()} == {
        "skip_1": 2, "skip_2": 4, "skip_3": 8, "skip_4": 16, "bottleneck": 32}
    loaded = load_encoder(tmp_path / "exp")
    assert type(loaded) is DenseNetEncoder and loaded.min_input_size == 32
    np.testing.assert_allclose(loaded(x, training=False), expected, atol=1e-5)
    assert sorted(loaded.skips_model().output) == sorted([*meta["outputs"]["skips"], "features"])


@pytest.mark.slow
def test_pretrain_cli_export_and_load_every_format(tmp_path, rng):
    """`ssl3d pretrain --set encoder={architecture="densenet121"}` on 2D phantoms, then the
    preset, the SavedModel and the pretrained task's encoder give the same features."""
    from ssl3d_keras.training import load_run

    run = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "pretrain", "rotation", "--dim", "2", "--steps", "2", "--batch-size", "2",
        "--input-size", "32", "--out", str(run), "--quiet",
        "--set", 'encoder={architecture="densenet121"}', "--set", "data.phantoms.channels=3",
        "--set", "data.phantoms.n=2", "--set", "precision=\"float32\"",
        "--set", "jit_compile=false",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    task, config = load_run(run)
    assert config.encoder == {"architecture": "densenet121"}
    assert isinstance(task.encoder, DenseNetEncoder) and task.encoder.input_channels == 3

    written = export_run(run, tmp_path / "exp", formats=("preset", "savedmodel"))
    assert written["metadata"]["pretraining"]["steps"] == 2
    x = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
    expected = task.encoder(x, training=False)
    preset = load_encoder(tmp_path / "exp" / "preset")
    savedmodel = load_encoder(tmp_path / "exp" / "savedmodel")
    assert type(preset) is DenseNetEncoder
    np.testing.assert_allclose(preset(x, training=False), expected, atol=1e-5)
    np.testing.assert_allclose(savedmodel(x, training=False), expected, atol=1e-5)
    # A one-channel copy of the pretrained encoder, adapted on load.
    gray = load_encoder(tmp_path / "exp" / "preset", input_channels=1)
    assert type(gray) is DenseNetEncoder and gray.input_channels == 1
    assert "by mean" in gray.channel_report
