"""`ssl3d prepare` on a folder of DICOM series, through click's CliRunner."""

import json

import numpy as np
from click.testing import CliRunner

from ssl3d_keras.cli.main import cli
from tests.data.helpers_dicom import write_series


def _run(*args):
    return CliRunner().invoke(cli, ["prepare", *map(str, args)])


def _dicom_folder(root, rng):
    for n, case in enumerate(("PT01/CT", "PT02/CT")):
        stored = rng.integers(-100, 900, size=(6, 5, 4)).astype(np.int16)
        write_series(root / case, stored, series_uid=f"1.2.3.{n}")
    return root


def test_prepare_a_dicom_folder_end_to_end(tmp_path, rng):
    src = _dicom_folder(tmp_path / "dicom", rng)
    assert "dicom" in _run("--help").output
    out = tmp_path / "out"
    result = _run(src, "--out", out, "--spacing", "1", "--normalize", "ct", "--no-progress")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"prepared 2 cases into 1 shards at {out} (0 skipped)")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layout"] == "dicom" and manifest["channel_names"] == ["image"]
    assert [c["id"] for c in manifest["cases"]] == ["PT01/CT", "PT02/CT"]
    case = manifest["cases"][0]
    assert case["original_shape"][:3] == [6, 5, 4] and len(case["sources"]) == 4
    np.testing.assert_allclose(case["original_spacing"], [0.6, 0.8, 2.5], atol=1e-6)


def test_a_broken_series_fails_in_one_line_or_is_skipped(tmp_path, rng):
    src = _dicom_folder(tmp_path / "dicom", rng)
    culprit = sorted((src / "PT02" / "CT").iterdir())[1]
    culprit.write_bytes(b"not a DICOM file")
    result = _run(src, "--out", tmp_path / "a", "--layout", "dicom", "--no-progress")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert str(culprit) in lines[0] and "not a DICOM file" in lines[0]
    result = _run(src, "--out", tmp_path / "b", "--on-error", "skip", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "prepared 1 cases into 1 shards" in result.output
    assert "(1 skipped: see manifest.json)" in result.output
    skipped = json.loads((tmp_path / "b" / "manifest.json").read_text())["skipped"]
    assert [s["id"] for s in skipped] == ["PT02/CT"]
