"""`ssl3d prepare` through click's CliRunner."""

import json

import numpy as np
from click.testing import CliRunner

from ssl3d_keras.cli.main import cli
from tests.data.helpers_nifti import write_brats, write_decathlon


def _run(*args):
    return CliRunner().invoke(cli, ["prepare", *map(str, args)])


def test_help_lists_options():
    result = _run("--help")
    assert result.exit_code == 0
    for option in ("--layout", "--spacing", "--normalize", "--ct-window", "--crop-foreground",
                   "--shape", "--modalities", "--slice-axis", "--examples-per-shard",
                   "--on-error", "--overwrite"):
        assert option in result.output


def test_prepare_with_spacing_and_shape(tmp_path):
    src = write_decathlon(tmp_path / "src", 3, np.random.default_rng(0), size=8, channels=2)
    out = tmp_path / "out"
    result = _run(src, "--out", out, "--spacing", "2,2,2", "--shape", "4,4,4",
                  "--normalize", "ct", "--ct-window", "-100", "240", "--examples-per-shard", "2",
                  "--no-progress")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"prepared 3 cases into 2 shards at {out} (0 skipped)"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocessing"]["spacing"] == [2.0, 2.0, 2.0]
    assert manifest["preprocessing"]["ct_window"] == [-100.0, 240.0]
    assert manifest["cases"][0]["final_shape"] == [4, 4, 4, 2]
    again = _run(src, "--out", out, "--no-progress")
    assert again.exit_code == 2
    assert "already holds a prepared dataset" in again.output
    assert len(again.output.strip().splitlines()) == 1
    assert _run(src, "--out", out, "--overwrite", "--spacing", "1", "--no-progress",
                ).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preprocessing"]["spacing"] == [1.0, 1.0, 1.0]


def test_bad_case_fails_in_one_line_or_is_skipped(tmp_path):
    src = write_brats(tmp_path / "src", 2, np.random.default_rng(0))
    bad = src / "BraTS_001" / "BraTS_001_seg.nii.gz"
    bad.write_bytes(b"garbage" * 10)
    result = _run(src, "--out", tmp_path / "a", "--no-progress")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "BraTS_001_seg.nii.gz" in lines[0]
    result = _run(src, "--out", tmp_path / "b", "--on-error", "skip",
                  "--modalities", "flair,t1", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "prepared 1 cases into 1 shards" in result.output
    assert "(1 skipped: see manifest.json)" in result.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["channel_names"] == ["flair", "t1"]
    assert manifest["skipped"][0]["id"] == "BraTS_001"


def test_slices_layout(tmp_path):
    src = write_decathlon(tmp_path / "src", 1, np.random.default_rng(0), size=8, channels=1)
    result = _run(src, "--out", tmp_path / "out", "--layout", "slices", "--slice-axis", "2",
                  "--shape", "6", "--no-progress")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["dim"] == 2 and manifest["cases"][0]["id"] == "case_000/z000"
    assert manifest["cases"][0]["final_shape"] == [6, 6, 1]
