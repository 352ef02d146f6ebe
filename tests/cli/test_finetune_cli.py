"""`ssl3d finetune`, `ssl3d predict` and `ssl3d benchmark data-efficiency` through CliRunner."""

import json

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from ssl3d_keras.cli.main import cli

TINY = ["--scratch", "--steps", "4", "--warmup-steps", "1", "--batch-size", "2",
        "--patch-size", "16", "--set", "scratch_encoder={depth=2, base_filters=4, dropout=0.0}",
        "--set", "data.phantoms.n=6", "--set", "data.phantoms.size=24",
        "--set", "evaluation.validate_every=0", "--set", "checkpoint_every=2",
        "--set", "log_every=2"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_finetune_needs_an_encoder_or_scratch(tmp_path):
    result = invoke("finetune", "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "config key 'encoder'" in result.output and len(result.output.splitlines()) == 1


def test_finetune_then_predict_on_a_scan_in_another_orientation(tmp_path):
    result = invoke("finetune", *TINY, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    assert "Test Dice (mean over foreground classes)" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["cases"] and "dice_mean" in metrics["summary"]

    # A scan stored LPS with 2 mm voxels along one axis: the prediction keeps its grid.
    source = nib.load(str(tmp_path / "run" / "phantoms" / "imagesTr" / "phantom_000.nii.gz"))
    data = np.asarray(source.dataobj)[::-1, ::-1, ::2]
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    affine[:3, 3] = [30, 20, -10]
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(scan))
    result = invoke("predict", tmp_path / "run", "--data", scan, "--out", tmp_path / "pred",
                    "--quiet")
    assert result.exit_code == 0, result.output
    written = nib.load(str(tmp_path / "pred" / "scan.nii.gz"))
    assert written.shape == data.shape
    np.testing.assert_allclose(written.affine, affine)

    result = invoke("finetune", "--out", tmp_path / "run", "--resume", "--steps", "9")
    assert result.exit_code == 2 and "keeps its stored config" in result.output


def test_predict_reports_an_unreadable_scan(tmp_path):
    result = invoke("finetune", *TINY, "--out", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "broken.nii.gz").write_bytes(b"not a nifti file")
    result = invoke("predict", tmp_path / "run", "--data", folder / "broken.nii.gz", "--out",
                    tmp_path / "pred", "--quiet")
    assert result.exit_code == 2 and "broken.nii.gz" in result.output


@pytest.mark.parametrize("args,message", [
    (["--fractions", "0.1,x"], "comma-separated numbers"),
    (["--tasks", "rotaton"], "did you mean 'rotation'"),
    (["--encoder", "nohandle"], "NAME=HANDLE"),
])
def test_data_efficiency_rejects_bad_options(tmp_path, args, message):
    result = invoke("benchmark", "data-efficiency", *args, "--out", tmp_path / "exp")
    assert result.exit_code == 2
    assert message in result.output


def test_benchmark_keeps_its_suites_and_lists_the_experiment():
    result = invoke("benchmark", "--help")
    assert result.exit_code == 0 and "data-efficiency" in result.output and "--suite" in result.output
    result = invoke("benchmark", "data-efficiency", "--help")
    assert result.exit_code == 0 and "--quick" in result.output
