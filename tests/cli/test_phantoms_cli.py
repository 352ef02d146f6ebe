import json

import nibabel as nib
import numpy as np
from click.testing import CliRunner

from ssl3d_keras.cli.main import cli
from ssl3d_keras.data.phantoms import make_phantom

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_phantoms_writes_a_decathlon_dataset(tmp_path):
    out = tmp_path / "ds"
    result = CliRunner().invoke(cli, ["phantoms", "--out", str(out), "--n", "2", "--size", "10",
                                      "--channels", "2", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and "2 phantoms" in result.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 2
    image = nib.load(out / "imagesTr" / "phantom_001.nii.gz").get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(image, make_phantom((4, 1), size=10, channels=2)[0])


def test_phantoms_rejects_bad_input(tmp_path):
    result = CliRunner().invoke(cli, ["phantoms", "--out", str(tmp_path), "--n", "0"])
    assert result.exit_code == 2 and "--n" in result.output


def test_show_phantoms_draws_a_png(tmp_path):
    out = tmp_path / "figs" / "phantoms.png"
    result = CliRunner().invoke(cli, ["show", "phantoms", "--out", str(out), "--size", "16",
                                      "--channels", "2", "--n", "2"])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert not [p for p in out.parent.iterdir() if p.name != "phantoms.png"]  # no temp file


def test_show_2d_phantoms(tmp_path):
    out = tmp_path / "p2.png"
    result = CliRunner().invoke(cli, ["show", "phantoms", "--out", str(out), "--size", "16",
                                      "--dim", "2", "--n", "1"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_show_unknown_task_suggests_the_closest_name(tmp_path):
    result = CliRunner().invoke(cli, ["show", "jigsw", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "did you mean 'jigsaw'" in result.output
    assert not (tmp_path / "x.png").exists()


def test_show_task_calls_the_task_drawing(tmp_path):
    out = tmp_path / "rotation.png"
    result = CliRunner().invoke(cli, ["show", "rotation", "--out", str(out), "--size", "16",
                                      "--dim", "2"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG_MAGIC)
