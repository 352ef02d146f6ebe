import dataclasses
import json
from typing import Literal

import pytest

from ssl3d_keras.config import apply_overrides, from_dict, read_config_file, to_dict
from ssl3d_keras.errors import ConfigError


@dataclasses.dataclass
class Optim:
    learning_rate: float = 1e-4
    schedule: Literal["constant", "cosine"] = "constant"


@dataclasses.dataclass
class Run:
    steps: int = 10
    size: tuple[int, int, int] = (32, 32, 32)
    data: str | None = None
    optimizer: Optim = dataclasses.field(default_factory=Optim)


def test_nested_values_are_read_and_coerced():
    run = from_dict(Run, {"steps": 5, "size": [8, 16, 24], "optimizer": {"learning_rate": 1}})
    assert run.steps == 5
    assert run.size == (8, 16, 24)
    assert run.optimizer.learning_rate == 1.0 and isinstance(run.optimizer.learning_rate, float)
    assert run.data is None


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'optimizer.learning_rat'.*did you mean 'learning_rate'"):
        from_dict(Run, {"optimizer": {"learning_rat": 1e-3}})


@pytest.mark.parametrize(
    "data, key",
    [
        ({"steps": "ten"}, "steps"),
        ({"steps": True}, "steps"),
        ({"size": [1, 2]}, "size"),
        ({"optimizer": {"schedule": "cosin"}}, "optimizer.schedule"),
        ({"optimizer": 3}, "optimizer"),
    ],
)
def test_wrong_values_name_their_key(data, key):
    with pytest.raises(ConfigError) as info:
        from_dict(Run, data)
    assert info.value.key == key


def test_round_trip_through_json_and_toml(tmp_path):
    run = from_dict(Run, {"steps": 7, "optimizer": {"schedule": "cosine"}})
    (tmp_path / "run.json").write_text(json.dumps(to_dict(run)))
    assert from_dict(Run, read_config_file(tmp_path / "run.json")) == run
    (tmp_path / "run.toml").write_text('steps = 7\n[optimizer]\nschedule = "cosine"\n')
    assert from_dict(Run, read_config_file(tmp_path / "run.toml")) == run


def test_bad_config_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_config_file(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("steps = = 3")
    with pytest.raises(ConfigError, match="bad.toml.*does not parse"):
        read_config_file(tmp_path / "bad.toml")
    (tmp_path / "run.yaml").write_text("steps: 3")
    with pytest.raises(ConfigError, match="suffix"):
        read_config_file(tmp_path / "run.yaml")


def test_overrides_parse_values_and_nest():
    data = apply_overrides({}, ["steps=3", "optimizer.learning_rate=1e-3", "data=phantoms",
                                "size=[8, 8, 8]"])
    assert data == {"steps": 3, "optimizer": {"learning_rate": 1e-3}, "data": "phantoms",
                    "size": [8, 8, 8]}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["steps"])


def test_check_number_wants_a_finite_number_in_range():
    from ssl3d_keras.config import check_number

    check_number("a", 0.0, low=0, high=1)
    check_number("a", 1, low=0, high=1)
    for bad in (float("nan"), float("inf"), -1e-9, 1.5, True, "0.5", None):
        with pytest.raises(ConfigError) as info:
            check_number("a", bad, low=0, high=1)
        assert info.value.key == "a" and repr(bad) in str(info.value)
    with pytest.raises(ConfigError, match="> 0"):
        check_number("lr", 0, low=0, low_open=True)


def test_check_int_upper_bound():
    from ssl3d_keras.config import check_int

    check_int("seed", 2**32 - 1, 0, 2**32 - 1)
    with pytest.raises(ConfigError, match="<= 4294967295. Received: seed=4294967296"):
        check_int("seed", 2**32, 0, 2**32 - 1)


def test_a_missing_required_key_is_named():
    @dataclasses.dataclass
    class Facts:
        shape: list[int]
        channels: int = 1

    with pytest.raises(ConfigError) as info:
        from_dict(Facts, {"channels": 2}, prefix="data.resolved")
    assert info.value.key == "data.resolved.shape"


def test_config_files_that_are_not_tables_or_not_text(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="table of keys at the top.*Received a list"):
        read_config_file(tmp_path / "list.json")
    (tmp_path / "latin.toml").write_bytes("seed = 1 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin.toml.*not UTF-8 text \(byte 14"):
        read_config_file(tmp_path / "latin.toml")
    (tmp_path / "scalar.json").write_text("3")
    with pytest.raises(ConfigError, match="Received a int"):
        read_config_file(tmp_path / "scalar.json")
