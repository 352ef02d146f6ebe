"""`ssl3d prepare` through click's CliRunner."""

import json

import numpy as np
import pytest
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
                   "--on-error", "--overwrite", "--resize", "--foreground-threshold",
                   "--max-padding-share", "--max-voxels", "--include-unlabelled", "--holdout"):
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


def test_resize_threshold_and_padding_warnings(tmp_path):
    from tests.data.helpers_nifti import write_nifti

    rng = np.random.default_rng(0)
    src = tmp_path / "ct"
    for name in ("a", "b"):
        image = np.full((12, 10, 8), -1000.0, np.float32)  # air, and a body in rows 3..8
        image[3:9] = rng.normal(40, 5, size=(6, 10, 8))
        write_nifti(src / f"{name}.nii.gz", image)
    # Without a threshold nothing is cropped and the air (0 after the window) is padding.
    result = _run(src, "--out", tmp_path / "plain", "--resize", "6", "--normalize", "ct",
                  "--ct-window", "-100", "240", "--crop-foreground", "--no-progress")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    # Rows 3..8 of 12 resized to 6 rows: only the rows centred at 4.5 and 6.5 are body
    # (the ones at 2.5 and 8.5 blend air, -480 HU, clipped to 0 by the window).
    assert lines[:2] == [f"{name}: 67% of the prepared volume is padding (outside the "
                         f"foreground's bounding box), more than max_padding_share=50%"
                         for name in ("a", "b")]
    assert any(line.startswith("2 of 2 prepared cases are more than 50% padding")
               for line in lines)
    assert lines[-1].startswith("prepared 2 cases into 1 shards")
    manifest = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert manifest["cases"][0]["final_shape"] == [6, 6, 6, 1]
    assert manifest["cases"][0]["padding_share"] == pytest.approx(1 - 2 / 6)
    # A threshold below the tissue crops the body: no padding, no warning.
    result = _run(src, "--out", tmp_path / "crop", "--resize", "6,5,4", "--normalize", "ct",
                  "--ct-window", "-100", "240", "--crop-foreground",
                  "--foreground-threshold", "-500", "--max-padding-share", "0.2",
                  "--no-progress")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"prepared 2 cases into 1 shards at {tmp_path / 'crop'} " \
                                    "(0 skipped)"
    case = json.loads((tmp_path / "crop" / "manifest.json").read_text())["cases"][0]
    assert case["crop_box"] == [[3, 0, 0], [9, 10, 8]]
    assert case["resize"]["from_shape"] == [6, 10, 8] and case["final_shape"] == [6, 5, 4, 1]
    assert case["padding_share"] == 0.0
    result = _run(src, "--out", tmp_path / "huge", "--spacing", "0.01", "--max-voxels", "1000",
                  "--no-progress")
    assert result.exit_code == 2 and "more than max_voxels=1,000" in result.output


def test_include_unlabelled_and_holdout(tmp_path):
    from ssl3d_keras.downstream.splits import make_splits

    src = write_decathlon(tmp_path / "src", 5, np.random.default_rng(0), size=8, channels=1,
                          n_test=2)
    result = _run(src, "--out", tmp_path / "out", "--include-unlabelled", "--holdout", "0.2,3",
                  "--max-padding-share", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    expected = make_splits([f"case_{i:03d}" for i in range(5)], seed=3).test
    assert result.output.splitlines()[0] == ("held out 1 cases for downstream testing "
                                             "(test_fraction=0.2, seed=3, min_test=1)")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["held_out"]["ids"] == expected
    assert len(manifest["cases"]) == 6 and manifest["preprocessing"]["discover"] == {
        "unlabelled": True}
    (tmp_path / "ids.json").write_text(json.dumps(["case_001"]))
    result = _run(src, "--out", tmp_path / "out2", "--holdout", tmp_path / "ids.json",
                  "--max-padding-share", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out2" / "manifest.json").read_text())["held_out"] == {
        "rule": {"cases": str(tmp_path / "ids.json")}, "ids": ["case_001"]}
    result = _run(src, "--out", tmp_path / "out3", "--holdout", "0.2,1,2", "--no-progress")
    assert result.exit_code == 2 and "FRACTION[,SEED]" in result.output
