"""`ssl3d export RUN_DIR --out DIR [--format ...] [--checkpoint N]`."""

import json

from click.testing import CliRunner

from ssl3d_keras.cli.main import cli
from ssl3d_keras.config import from_dict
from ssl3d_keras.training import PretrainConfig, pretrain

TINY = {"task": "rotation", "steps": 2, "batch_size": 2, "precision": "float32",
        "jit_compile": False, "checkpoint_every": 1,
        "encoder": {"depth": 1, "base_filters": 2, "norm": "batch", "dropout": 0.0},
        "task_config": {"head_units": [8]},
        "data": {"input_size": 16, "phantoms": {"n": 2, "size": 16}}}


def test_export_formats_and_checkpoint(tmp_path):
    run = tmp_path / "run"
    pretrain(from_dict(PretrainConfig, TINY), run, verbose=False)
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(run), "--out", str(tmp_path / "a"),
                                 "--format", "preset", "--format", "hub", "--checkpoint", "1"])
    assert result.exit_code == 0, result.output
    assert "features   stride 4, 4 channels" in result.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["export.json", "hub.tar.gz",
                                                                  "preset", "savedmodel"]
    meta = json.loads((tmp_path / "a" / "preset" / "metadata.json").read_text())
    assert meta["pretraining"]["steps"] == 1 and meta["pretraining"]["task"] == "rotation"

    result = runner.invoke(cli, ["export", str(run), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b" / "hub.tar.gz").is_file()
    meta = json.loads((tmp_path / "b" / "preset" / "metadata.json").read_text())
    assert meta["pretraining"]["steps"] == 2

    result = runner.invoke(cli, ["export", str(run), "--out", str(tmp_path / "c"),
                                 "--checkpoint", "7"])
    assert result.exit_code == 2
    assert "Error:" in result.output and "ckpt-7" in result.output
    assert "Traceback" not in result.output


def test_export_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("Error: ")
    assert "not a pretraining run (no config.json)" in result.output
    result = runner.invoke(cli, ["export", str(tmp_path), "--out", "x", "--format", "onnx"])
    assert result.exit_code == 2 and "onnx" in result.output
    result = runner.invoke(cli, ["export", "--help"])
    assert "--checkpoint" in result.output and "latest checkpoint" in result.output
    assert "preset|savedmodel|hub|all" in result.output
