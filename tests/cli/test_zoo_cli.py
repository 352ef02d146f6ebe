"""`ssl3d zoo list|info|verify|build`."""

import json
from pathlib import Path

from click.testing import CliRunner

from ssl3d_keras import zoo
from ssl3d_keras.cli.main import cli
from tests.zoo.helpers_ct import write_ct_decathlon


def test_list_shows_every_recipe_with_its_card():
    result = CliRunner().invoke(cli, ["zoo", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == zoo.list_recipes()
    for line in lines:
        assert " card " in line
        name = line.split()[0]
        assert ("builds here" in line) == name.startswith("phantom-")
    paper = CliRunner().invoke(cli, ["zoo", "list", "--paper"]).output.strip().splitlines()
    assert len(paper) == 20 and not any(line.startswith("phantom") for line in paper)


def test_info_and_card():
    runner = CliRunner()
    result = runner.invoke(cli, ["zoo", "info", "ukb-brain-cpc"])
    assert result.exit_code == 0
    assert "learning_rate\": 0.001" in result.output and "not reported" in result.output
    assert "ssl3d zoo build ukb-brain-cpc --data PATH" in result.output
    card = runner.invoke(cli, ["zoo", "info", "phantom-rpl", "--card"]).output
    assert card.startswith("# phantom-rpl:") and "hub.KerasLayer" in card
    result = runner.invoke(cli, ["zoo", "info", "phantom-rotaton"])
    assert result.exit_code == 2 and "did you mean 'phantom-rotation'" in result.output


def test_build_needs_data_or_builds_phantom(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["zoo", "build", "pancreas-ct-rotation"])
    assert result.exit_code == 2
    assert "never published" in result.output and "--data PATH" in result.output
    out = tmp_path / "b"
    result = runner.invoke(cli, ["zoo", "build", "phantom-exemplar", "--out", str(out), "--quiet",
                                 "--set", "steps=1", "--set", "batch_size=2",
                                 "--set", "data.input_size=16", "--set", "data.phantoms.n=2",
                                 "--set", "data.phantoms.size=16", "--set", "encoder.depth=1",
                                 "--set", "encoder.base_filters=2",
                                 "--set", "task_config.embedding_size=8"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "export" / "preset" / "metadata.json").read_text())
    assert meta["pretraining"]["task"] == "exemplar"
    assert meta["input"]["modality"] == "synthetic phantom"
    assert f"Built phantom-exemplar: {out / 'export'}" in result.output


def test_verify_passes_a_ct_folder_that_fits_the_recipe(tmp_path, rng):
    data = write_ct_decathlon(tmp_path / "Task07", rng, n=4)
    result = CliRunner().invoke(cli, ["zoo", "verify", "pancreas-ct-rotation", "--data",
                                      str(data), "--cases", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("recipe pancreas-ct-rotation on ")
    assert "expects shape 128x128x128, 1 channel(s) ['CT'], padding <= 0.5" in lines[0]
    assert lines[1].split() == ["case", "shape", "channels", "padding", "min", "max", "verdict"]
    rows = [line.split() for line in lines[2:4]]
    assert [r[0] for r in rows] == ["pancreas_000", "pancreas_003"]
    assert all(r[1:3] == ["128x128x128", "1"] and r[-1] == "ok" for r in rows)
    assert "ok: 2 case(s) match the recipe pancreas-ct-rotation" in result.output


def test_verify_fails_with_one_line_per_failed_check(tmp_path, rng):
    data = write_ct_decathlon(tmp_path / "two", rng, n=1, channels=2)
    result = CliRunner().invoke(cli, ["zoo", "verify", "pancreas-ct-rotation", "--data",
                                      str(data)])
    assert result.exit_code == 1
    assert "FAIL pancreas_000: 2 channel(s), the card says 1 (CT)" in result.output
    assert "1 check(s) failed" in result.output
    # A recipe file outside the zoo: the old pancreas recipe's centre pad (no resize) on a
    # scan whose air was stored as 0 HU leaves the volume mostly padding.
    text = (Path(zoo.__file__).resolve().parents[2] / "zoo" / "pancreas-ct-rotation.toml")
    recipe = tmp_path / "pancreas-ct-rotation.toml"
    recipe.write_text(text.read_text().replace("resize = [128, 128, 128]", "shape = [64, 64, 64]")
                      .replace("input_size = 128", "input_size = 32"))
    flat = write_ct_decathlon(tmp_path / "air0", rng, n=1, air=0.0, body=0.2)
    result = CliRunner().invoke(cli, ["zoo", "verify", str(recipe), "--data", str(flat)])
    assert result.exit_code == 1
    failures = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 1
    assert "padding share 0.87 is above the recipe's limit 0.5" in failures[0]
    result = CliRunner().invoke(cli, ["zoo", "verify", "pancreas-ct-rotation", "--data",
                                      str(flat), "--cases", "0"])
    assert result.exit_code == 2
