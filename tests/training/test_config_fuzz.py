"""Config fuzzing: every key of `PretrainConfig`, wrong types and out-of-range values.

Each key gets every value of `VALUES` through the three ways a user sets it
(`--set KEY=VALUE`, a JSON file, a TOML file). The outcome must be a
`ConfigError` naming that key (a `DataError` for a path that does not exist),
or an accepted config, and a value is accepted exactly when the rule of its
key in `RULES` (written here from the documented meaning of each key, not
from the code) says it is valid. Validation only: nothing is trained.
"""

import dataclasses
import json
import math
import typing

import pytest
from click.testing import CliRunner

from ssl3d_keras.config import apply_overrides
from ssl3d_keras.errors import ConfigError, DataError
from ssl3d_keras.training import PretrainConfig
from ssl3d_keras.training.assemble import assemble_config
from ssl3d_keras.training.run import resolve_config

MAX_INT = 2**63 - 1
# The base every case starts from: the quick rotation config (or, under a config file,
# the paper encoder, which needs 32^3 inputs) on two 32^3 phantoms.
BASE = ["data.phantoms.n=2", "data.phantoms.size=32", "data.input_size=32"]
PHANTOM_SIZE = 32
# The quick config's encoder (depth 2 and a final pooling) halves its input three times.
ENCODER = {"depth": 2, "base_filters": 8}
MIN_INPUT = 8
# Keys checked against another: an error may name either of the pair.
PARTNERS = {"data.input_size": "encoder", "data.phantoms.size": "data.input_size"}

VALUES = ["abc", "", True, False, None, [1], [], {"a": 1}, {}, -1, 0, 1, 3, 2.0, 3.0, 0.5,
          -0.5, 2**40, 2**70, float("nan"), float("inf"), 1e30]


def is_int(v, low, high=MAX_INT):
    return type(v) is int and low <= v <= high


def is_number(v, low=None, high=None, low_open=False):
    return (type(v) in (int, float) and math.isfinite(v)
            and (low is None or v > low or (v == low and not low_open))
            and (high is None or v <= high))


def optional(rule):
    return lambda v: v is None or rule(v)


def one_of(*choices):
    return lambda v: any(v == c and type(v) is type(c) for c in choices)


def count(v):
    return is_int(v, 1)


def a_path(v):  # none of the fuzzed strings is an existing folder
    return v is None


RULES = {
    "task": lambda v: v in ("cpc", "exemplar", "jigsaw", "rotation", "rpl"),
    # Free tables: their keys belong to a task or a network; an unknown key is refused.
    "task_config": lambda v: v == {},
    "encoder": lambda v: v == {},
    "data.path": a_path,
    "data.prepared": lambda v: v is None or type(v) is str,  # filled in by the run
    "data.layout": one_of("auto", "folder", "decathlon", "brats", "csv", "images2d", "dicom",
                          "slices"),
    "data.preprocess": lambda v: v == {},
    "data.phantoms.n": count,
    "data.phantoms.size": lambda v: is_int(v, PHANTOM_SIZE),  # >= 8 and >= the 32^3 crop
    "data.phantoms.channels": count,
    "data.phantoms.seed": lambda v: is_int(v, 0, 2**32 - 1),
    "data.dim": one_of(2, 3),
    "data.slice_axis": one_of(0, 1, 2),
    "data.input_size": optional(lambda v: is_int(v, MIN_INPUT, PHANTOM_SIZE)),
    "data.crops_per_volume": count,
    "data.cache": one_of(True, False, "auto"),
    "data.shuffle_volumes": count,
    "data.include_unlabelled": one_of(True, False),
    # Which cases to hold out of a dataset; phantoms ignore it (with a warning).
    "data.holdout": lambda v: v is None or type(v) is dict,
    # The fuzzed configs train on phantoms, which service workers cannot make.
    "data.service": lambda v: v is None,
    "data.service_sharding": one_of("dynamic", "off"),
    "data.resolved": lambda v: v is None,  # filled in by the run: a partial table is refused
    "optimizer.name": one_of("adam", "adamw"),
    "optimizer.learning_rate": lambda v: is_number(v, 0, low_open=True),
    "optimizer.weight_decay": optional(lambda v: is_number(v, 0)),
    "optimizer.schedule": one_of("constant", "cosine"),
    "optimizer.warmup_steps": lambda v: is_int(v, 0),
    "optimizer.alpha": lambda v: is_number(v, 0, 1),
    "optimizer.clipnorm": optional(lambda v: is_number(v, 0, low_open=True)),
    "optimizer.global_clipnorm": optional(lambda v: is_number(v, 0, low_open=True)),
    "steps": count,
    "epochs": optional(count),
    "batch_size": count,
    "seed": lambda v: is_int(v, 0, 2**32 - 1),
    "precision": one_of("auto", "float32", "mixed_float16", "mixed_bfloat16"),
    "strategy": one_of("auto", "default", "mirrored", "multiworker"),
    "jit_compile": one_of(True, False, "auto"),
    "checkpoint_every": count,
    "keep_checkpoints": count,
    "log_every": count,
    "monitor.every": lambda v: is_int(v, 0),
    "monitor.validation_examples": count,
    "monitor.validation_volumes": count,
    "monitor.validation_data": a_path,
    "monitor.probe": one_of(True, False),
    "monitor.probe_data": a_path,
    "monitor.probe_cases": count,
    "monitor.probe_steps": count,
    "monitor.probe_patch_size": count,
    "on_nonfinite": one_of("stop", "skip"),
    "max_nonfinite_skips": count,
    "resumed_changes": lambda v: type(v) is list and all(type(x) is dict for x in v),
}
PATH_KEYS = ("data.path", "monitor.validation_data", "monitor.probe_data")


def leaf_keys(cls, prefix=""):
    """Every dotted key of a (nested) config dataclass; a dataclass behind `| None` is a leaf."""
    keys = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        dotted = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(hints[field.name]):
            keys.extend(leaf_keys(hints[field.name], f"{dotted}."))
        else:
            keys.append(dotted)
    return keys


def nested(dotted, value):
    data = {}
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def toml_literal(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else repr(value))
    if isinstance(value, (int, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)  # None: TOML has no null


def toml_text(dotted, value):
    *parents, last = dotted.split(".")
    header = f"[{'.'.join(parents)}]\n" if parents else ""
    return f"{header}{last} = {toml_literal(value)}\n"


# The default suite sends every value through --set and these through the files too
# (one of each kind); `-m slow` sends every value every way.
FILE_VALUES = ["abc", True, None, [1], {"a": 1}, -1, 0.5, float("nan")]


def cases(full=True):
    for key in leaf_keys(PretrainConfig):
        for value in VALUES:
            for route in ("set", "json", "toml"):
                if route == "toml" and value is None:
                    continue
                if route != "set" and not full and not any(
                        value is v or (type(value) is type(v) and value == v)
                        or (v != v and value != value) for v in FILE_VALUES):
                    continue
                yield key, value, route


def check(key, value, route, tmp_path):
    """`(accepted, value as parsed)` of one case; raises on any outcome but a ConfigError."""
    parsed = value
    config_file, overrides = None, [b for b in BASE if not b.startswith(f"{key}=")]
    if route == "set":
        literal = "null" if value is None else toml_literal(value)
        overrides.append(f"{key}={literal}")
        node = apply_overrides({}, [f"{key}={literal}"])
        for part in key.split("."):
            node = node[part]
        parsed = node  # e.g. `null` and `abc` are strings on the command line
    else:
        config_file = tmp_path / f"case.{route}"
        table = {"task": "rotation", "encoder": ENCODER, **nested(key, value)}
        if route == "json":
            config_file.write_text(json.dumps(table))
        else:
            top = "" if key == "task" else 'task = "rotation"\n'
            encoder = "" if key == "encoder" else "encoder = {depth = 2, base_filters = 8}\n"
            config_file.write_text(top + encoder + toml_text(key, value))
    task = "rotation" if key != "task" else None
    if key == "task" and route == "set":
        task = parsed if isinstance(parsed, str) else "rotation"
    try:
        assembled = assemble_config(task, config=config_file, overrides=overrides)
        resolve_config(assembled, tmp_path / "run", verbose=False)
    except ConfigError as e:
        return False, parsed, e
    except DataError as e:
        assert key in PATH_KEYS and isinstance(parsed, str), (key, value, route, e)
        return False, parsed, e
    return True, parsed, None


def run_cases(tmp_path, full):
    return [(key, value, route, *check(key, value, route, tmp_path))
            for key, value, route in cases(full)]


@pytest.fixture(scope="module", params=[
    pytest.param(False, id="quick"), pytest.param(True, id="full", marks=pytest.mark.slow)])
def outcomes(request, tmp_path_factory):
    return run_cases(tmp_path_factory.mktemp("fuzz"), request.param)


def test_every_key_has_a_rule():
    assert sorted(leaf_keys(PretrainConfig)) == sorted(RULES), (
        "a PretrainConfig key without a validity rule here: add one")


def test_no_exception_but_a_config_error_and_it_names_the_key(outcomes):
    assert len(outcomes) > 1500
    for key, value, route, accepted, parsed, error in outcomes:
        if accepted or isinstance(error, DataError):
            continue
        named = (error.key == key or error.key.startswith(f"{key}.")
                 or error.key == PARTNERS.get(key))
        # A file route names the file for a value the file format itself refuses.
        assert named or (route != "set" and str(error).startswith("config key '/")), (
            key, value, route, str(error))
        # ... and says what it received (or names the unknown key it received)
        assert ("Received" in str(error) or repr(parsed) in str(error)
                or "unknown key" in str(error)), (key, value, route, str(error))


def test_accepted_exactly_when_valid(outcomes):
    wrong = [(key, value, route, str(error)[:120]) for key, value, route, accepted, parsed, error
             in outcomes if accepted != RULES[key](parsed)]
    assert not wrong, wrong[:10]


@pytest.mark.parametrize("key", ["steps", "seed", "optimizer.alpha", "data.shuffle_volumes",
                                 "data.dim", "jit_compile", "task_config"])
def test_the_cli_refuses_in_one_line(tmp_path, key):
    from ssl3d_keras.cli.main import cli

    for value in ("abc", "-1", "[1]", "{a = 1}", "nan"):
        result = CliRunner().invoke(cli, ["pretrain", "rotation", "--out", str(tmp_path / "r"),
                                          "--set", f"{key}={value}", *sum(
                                              (["--set", b] for b in BASE), [])])
        parsed = apply_overrides({}, [f"{key}={value}"])
        for part in key.split("."):
            parsed = parsed[part]
        if RULES[key](parsed):
            continue
        assert result.exit_code == 2, (key, value, result.output)
        assert result.output.startswith("Error: config key") and result.output.count("\n") == 1
        assert not (tmp_path / "r" / "config.json").exists()
