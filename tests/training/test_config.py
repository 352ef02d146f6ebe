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


# The configs of issue 11 ("Configs"): each one a ConfigError naming the key and the
# value received, raised before any data is read or any model is built.
TINY = ["encoder.depth=1", "encoder.base_filters=2", "data.phantoms.n=2",
        "data.phantoms.size=16", "data.input_size=16"]


def _check(task, overrides=(), config=None, tmp_path=None):
    from ssl3d_keras.training.assemble import assemble_config

    assembled = assemble_config(task, config=config, overrides=[*TINY, *overrides])
    return resolve_config(assembled, tmp_path, verbose=False)


@pytest.mark.parametrize("task, override, key, received", [
    ("rotation", "task_config.head_units=a", "task_config.head_units", "'a'"),
    ("rotation", 'task_config.head_units=["a"]', "task_config.head_units", "['a']"),
    ("jigsaw", 'task_config.grid="x"', "task_config.grid", "'x'"),
    ("rotation", "seed=-1", "seed", "-1"),
    ("rotation", "seed=4294967296", "seed", "4294967296"),  # numpy.random.seed's limit is 2**32
    ("rotation", "data.phantoms.seed=-3", "data.phantoms.seed", "-3"),
    ("rotation", "data.shuffle_volumes=-1", "data.shuffle_volumes", "-1"),
    ("rotation", "data.shuffle_volumes=0", "data.shuffle_volumes", "0"),
    ("rotation", "optimizer.clipnorm=-1", "optimizer.clipnorm", "-1"),
    ("rotation", "optimizer.global_clipnorm=0", "optimizer.global_clipnorm", "0"),
    ("rotation", "optimizer.weight_decay=-0.1", "optimizer.weight_decay", "-0.1"),
    ("rotation", "optimizer.alpha=1.5", "optimizer.alpha", "1.5"),
    ("rotation", "optimizer.alpha=-0.5", "optimizer.alpha", "-0.5"),
    ("rotation", "optimizer.learning_rate=nan", "optimizer.learning_rate", "nan"),
    ("rotation", "optimizer.learning_rate=inf", "optimizer.learning_rate", "inf"),
    ("rotation", "steps=true", "steps", "True"),
    ("rotation", 'steps="10"', "steps", "'10'"),
    ("rotation", "data=3", "data", "3"),
    ("rotation", "encoder.depht=1", "encoder.depht", "depht"),
    ("rotation", "data.layout=folders", "data.layout", "'folders'"),
    ("rotation", "on_nonfinite=ignore", "on_nonfinite", "'ignore'"),
    ("rotation", "data.phantoms.size=4", "data.phantoms.size", "4"),
])
def test_invalid_values_are_named_before_any_work(tmp_path, task, override, key, received):
    with pytest.raises(ConfigError) as info:
        _check(task, [override], tmp_path=tmp_path)
    assert info.value.key == key
    assert received in str(info.value)
    assert not any(tmp_path.iterdir())  # nothing written


def test_an_encoder_too_deep_for_the_input_is_refused_before_it_is_built(tmp_path,
                                                                         monkeypatch):
    from ssl3d_keras.models import factory

    def never(*args, **kwargs):
        raise AssertionError("the encoder was built")  # depth 9 would allocate ~8 GB

    monkeypatch.setattr(factory, "get_encoder", never)
    monkeypatch.setattr(factory, "build_encoder", never)
    with pytest.raises(ConfigError) as info:
        _check("rotation", ["encoder.depth=9"], tmp_path=tmp_path)
    # 2**(9 + final pooling) = 1024 voxels per axis against 16^3 crops
    assert info.value.key == "encoder" and "1024" in str(info.value)
    assert "16x16x16" in str(info.value)
    # the arithmetic at the edge: depth 3 with final pooling needs 16, depth 4 needs 32
    monkeypatch.undo()
    _check("rotation", ["encoder.depth=3"], tmp_path=tmp_path)
    with pytest.raises(ConfigError):
        _check("rotation", ["encoder.depth=4"], tmp_path=tmp_path)
    _check("rotation", ["encoder.depth=4", "encoder.final_pool=false"], tmp_path=tmp_path)


def test_a_cpc_grid_bigger_than_the_volume_is_a_config_error_at_build():
    from ssl3d_keras.config import from_dict
    from ssl3d_keras.training.run import build_task

    config = from_dict(PretrainConfig, {
        "task": "cpc", "task_config": {"grid": 20},
        "encoder": {"depth": 1, "base_filters": 2},
        "data": {"input_size": 16, "phantoms": {"size": 16}}})
    with pytest.raises(ConfigError) as info:
        build_task(resolve_config(config, "/nonexistent-run", verbose=False))
    assert info.value.key == "task_config.grid" and "grid=(20, 20, 20)" in str(info.value)


@pytest.mark.parametrize("text, suffix, needle", [
    (b"data = 3\n", ".toml", "config key 'data': expected a table of keys. Received: 3"),
    (b"[1, 2]", ".json", "expected a table of keys at the top of the file. Received a list"),
    ("seed = 1 # caf\xe9\n".encode("latin-1"), ".toml", "is not UTF-8 text"),
    (b"batch_size = -2\n", ".toml", "config key 'batch_size': expected an int >= 1. "
                                   "Received: batch_size=-2"),
    (b'{"steps": null}', ".json", "config key 'steps': expected an integer. Received: None"),
    (b'steps = "10"\n', ".toml", "config key 'steps': expected an integer. Received: '10'"),
    (b"steps = true\n", ".toml", "config key 'steps': expected an integer. Received: True"),
])
def test_bad_config_files_are_one_clear_error(tmp_path, text, suffix, needle):
    from ssl3d_keras.training.assemble import assemble_config

    path = tmp_path / f"recipe{suffix}"
    path.write_bytes(text)
    with pytest.raises(ConfigError) as info:
        resolve_config(assemble_config("rotation", config=path), tmp_path / "run",
                       verbose=False)
    assert needle in str(info.value)


def test_the_cosine_warmup_must_end_before_the_run(tmp_path):
    with pytest.raises(ConfigError) as info:
        _check("rotation", ["optimizer.schedule=cosine", "optimizer.warmup_steps=300"],
               tmp_path=tmp_path)
    assert info.value.key == "optimizer.warmup_steps"
