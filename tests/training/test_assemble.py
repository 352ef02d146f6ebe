"""`assemble_config`: one resolution path for `ssl3d pretrain` and the zoo."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssl3d_keras import zoo
from ssl3d_keras.config import to_dict
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.training.assemble import assemble_config
from ssl3d_keras.training.config import quick_config

RECIPE = Path(__file__).parents[2] / "zoo" / "phantom-rotation.toml"


def test_layers_override_in_order():
    config = assemble_config("rotation", steps=7, batch_size=3,
                             overrides=["batch_size=5", "optimizer.learning_rate=0.5"])
    quick = quick_config("rotation")
    assert config.encoder == quick["encoder"]  # the base: the quick config
    assert config.steps == 7 and config.epochs is None  # an option over the base
    assert config.batch_size == 5  # an override over an option
    assert config.optimizer.learning_rate == 0.5
    # the base is a fresh copy every time: an override never leaks into the next call
    assert assemble_config("rotation").optimizer.learning_rate == 3e-3


def test_a_crop_larger_than_the_phantoms_enlarges_them():
    assert assemble_config("rotation", input_size=56).data.phantoms.size == 56
    assert assemble_config("rotation", input_size=40).data.phantoms.size == 48
    assert assemble_config("rotation", input_size=56, data=".").data.phantoms.size == 48


def test_stored_config_is_the_base_on_resume():
    stored = to_dict(assemble_config("jigsaw", seed=4))
    config = assemble_config("jigsaw", stored=stored)
    assert to_dict(config) == stored
    assert assemble_config("jigsaw", stored=stored, seed=5).seed == 5


def test_errors_name_keys_not_flags():
    with pytest.raises(ConfigError, match="not both") as info:
        assemble_config("rotation", steps=3, epochs=2)
    assert "--" not in str(info.value)
    with pytest.raises(ConfigError, match="pretrains 'rotation', not 'jigsaw'"):
        assemble_config("jigsaw", config=RECIPE)
    with pytest.raises(ConfigError, match="stepz"):
        assemble_config("rotation", overrides=["stepz=1"])


def test_pretrain_config_and_zoo_build_resolve_the_same(tmp_path, monkeypatch):
    """`ssl3d pretrain TASK --config RECIPE --set ...` and `ssl3d zoo build RECIPE --set ...`
    hand the training loop the same config."""
    from ssl3d_keras.cli.main import cli

    seen = []

    def fake_pretrain(config, out_dir, **kwargs):
        seen.append(to_dict(config))
        raise SystemExit(0)

    monkeypatch.setattr("ssl3d_keras.training.pretrain", fake_pretrain)
    # Switching the network drops the recipe's U-Net keys, in both paths.
    overrides = ["--set", "steps=3", "--set", "encoder.architecture=densenet121",
                 "--set", "data.dim=2"]
    CliRunner().invoke(cli, ["pretrain", "rotation", "--config", str(RECIPE), "--out",
                             str(tmp_path / "a"), *overrides], catch_exceptions=False)
    CliRunner().invoke(cli, ["zoo", "build", "phantom-rotation", "--out", str(tmp_path / "b"),
                             *overrides], catch_exceptions=False)
    assert len(seen) == 2 and seen[0] == seen[1]
    table = zoo.get_recipe("phantom-rotation").pretrain
    assert seen[0]["task_config"] == table["task_config"] and seen[0]["steps"] == 3
    assert seen[0]["encoder"] == {"architecture": "densenet121"}
    assert json.dumps(seen[0])  # plain data
