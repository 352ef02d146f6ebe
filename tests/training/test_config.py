"""PretrainConfig: strict keys, validation, resolution of epochs and input shape."""

import pytest

from ssl3d_keras.config import from_dict, to_dict
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.training import PretrainConfig
from ssl3d_keras.training.config import validate
from ssl3d_keras.training.run import differing_keys, input_shape, resolve_config


def test_unknown_top_level_key_is_named():
    with pytest.raises(ConfigError) as info:
        from_dict(PretrainConfig, {"stepz": 3})
    assert info.value.key == "stepz"
    assert "did you mean 'steps'" in str(info.value)


def test_unknown_nested_key_is_named_with_its_path():
    with pytest.raises(ConfigError) as info:
        from_dict(PretrainConfig, {"optimizer": {"lerning_rate": 1e-3}})
    assert info.value.key == "optimizer.lerning_rate"
    assert "learning_rate" in str(info.value)


def test_wrong_choice_is_rejected():
    with pytest.raises(ConfigError) as info:
        from_dict(PretrainConfig, {"precision": "float16"})
    assert info.value.key == "precision"


def test_round_trip_through_dict():
    config = from_dict(PretrainConfig, {"task": "jigsaw", "jit_compile": False,
                                        "data": {"dim": 2, "phantoms": {"n": 3}}})
    again = from_dict(PretrainConfig, to_dict(config))
    assert again == config
    assert again.data.phantoms.n == 3 and again.jit_compile is False


@pytest.mark.parametrize("change, key", [
    ({"steps": 0}, "steps"),
    ({"optimizer": {"clipnorm": 1.0, "global_clipnorm": 1.0}}, "optimizer.clipnorm"),
    ({"task_config": {"input_shape": [8, 8, 8, 1]}}, "task_config.input_shape"),
    ({"data": {"input_size": 80}}, "data.input_size"),
])
def test_validate_names_the_bad_key(change, key):
    with pytest.raises(ConfigError) as info:
        validate(from_dict(PretrainConfig, change))
    assert info.value.key == key


def test_epochs_become_steps(tmp_path):
    # 6 phantoms x 2 crops = 12 examples per epoch; 3 epochs at batch 5 -> ceil(36 / 5) = 8
    config = resolve_config({"epochs": 3, "batch_size": 5,
                             "data": {"crops_per_volume": 2, "phantoms": {"n": 6}}},
                            tmp_path, verbose=False)
    assert config.steps == 8


def test_input_shape_from_crop_and_phantoms():
    config = from_dict(PretrainConfig, {"data": {"input_size": 24, "phantoms": {"channels": 2}}})
    assert input_shape(config) == (24, 24, 24, 2)
    config = from_dict(PretrainConfig, {"data": {"input_size": None, "dim": 2,
                                                 "phantoms": {"size": 32}}})
    assert input_shape(config) == (32, 32, 1)


def test_differing_keys_are_dotted():
    a = to_dict(PretrainConfig())
    b = to_dict(from_dict(PretrainConfig, {"seed": 3, "data": {"phantoms": {"n": 2}}}))
    assert differing_keys(a, b) == ["data.phantoms.n", "seed"]


def test_defaults_are_the_paper_settings():
    config = PretrainConfig()
    assert config.encoder == {}  # the paper's U-Net encoder
    assert config.task_config == {}  # the tasks' paper arguments
    assert (config.optimizer.name, config.optimizer.learning_rate,
            config.optimizer.schedule) == ("adam", 1e-4, "constant")


@pytest.mark.parametrize("task", ["cpc", "exemplar", "jigsaw", "rotation", "rpl"])
def test_quick_config_builds_every_task(task):
    from ssl3d_keras.training.config import quick_config
    from ssl3d_keras.training.run import build_task

    config = validate(from_dict(PretrainConfig, quick_config(task)))
    assert config.task == task and config.steps == 300
    built = build_task(config)  # the reduced encoder fits the task's patches
    assert built.encoder.count_params() < 100_000


def test_quick_config_returns_a_fresh_copy():
    from ssl3d_keras.training.config import quick_config

    first = quick_config("rotation")
    first["data"]["phantoms"]["n"] = 999
    first["encoder"]["depth"] = 9
    second = quick_config("rotation")
    assert second["data"]["phantoms"]["n"] != 999 and second["encoder"]["depth"] != 9
