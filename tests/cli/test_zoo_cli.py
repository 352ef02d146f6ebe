"""`ssl3d zoo list|info|build`."""

import json

from click.testing import CliRunner

from ssl3d_keras import zoo
from ssl3d_keras.cli.main import cli


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
    assert len(paper) == 15 and not any(line.startswith("phantom") for line in paper)


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
