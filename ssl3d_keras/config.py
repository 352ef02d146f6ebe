"""Dataclass configs read from TOML or JSON, with strict keys.

Every config in the project is a (possibly nested) dataclass. ``from_dict``
builds one from plain data and rejects an unknown key by name, suggesting the
closest known one, because the old code silently ignored typos.

Example:

>>> @dataclasses.dataclass
... class Optim:
...     learning_rate: float = 1e-4
>>> from_dict(Optim, {"learning_rate": 1e-3})
Optim(learning_rate=0.001)
"""

import dataclasses
import difflib
import json
import math
import numbers
import tomllib
import types
import typing
from pathlib import Path

from ssl3d_keras.errors import ConfigError


def check_int(key, value, minimum=1, maximum=None):
    """Raise a `ConfigError` unless `value` is an int (not a bool) in `[minimum, maximum]`.

    Example:

    >>> check_int("depth", 0)
    Traceback (most recent call last):
    ...
    ssl3d_keras.errors.ConfigError: config key 'depth': expected an int >= 1. Received: depth=0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(key, f"expected an int >= {minimum}. Received: {key}={value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(key, f"expected an int <= {maximum}. Received: {key}={value!r}")


def check_number(key, value, *, low=None, high=None, low_open=False):
    """Raise a `ConfigError` unless `value` is a finite number (not a bool) in range.

    Args:
        key: dotted key named in the error.
        value: the value received.
        low, high: inclusive bounds, or None for none.
        low_open: exclude `low` itself (e.g. a learning rate must be > 0).

    Example:

    >>> check_number("optimizer.alpha", 1.5, low=0, high=1)
    Traceback (most recent call last):
    ...
    ssl3d_keras.errors.ConfigError: config key 'optimizer.alpha': expected a finite number in [0, 1]. Received: optimizer.alpha=1.5
    """
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and math.isfinite(value)
          and (low is None or value > low or (value == low and not low_open))
          and (high is None or value <= high))
    if not ok:
        lower = "" if low is None else ("(" if low_open else "[") + f"{low}"
        upper = "" if high is None else f"{high}]"
        if low is not None and high is not None:
            where = f" in {lower}, {upper}"
        elif low is not None:
            where = f" {'>' if low_open else '>='} {low}"
        elif high is not None:
            where = f" <= {high}"
        else:
            where = ""
        raise ConfigError(key, f"expected a finite number{where}. Received: {key}={value!r}")


def check_choice(key, value, choices):
    """Raise a `ConfigError`, with the closest choice, unless `value` is one of `choices`."""
    if value not in choices:
        raise ConfigError(key, f"expected one of {list(choices)}{closest(value, choices)}. "
                          f"Received: {key}={value!r}")


def closest(name, choices):
    """Return `" (did you mean 'x'?)"` for the closest of `choices`, or `""`."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


# Keyword arguments Keras itself passes to a model constructor (from_config, clone_model).
KERAS_MODEL_KWARGS = ("name", "trainable", "dtype")


def reject_unknown_kwargs(owner, kwargs, allowed=KERAS_MODEL_KWARGS, known=()):
    """The one unknown-keyword guard of the Keras classes (Keras models accept any silently).

    Args:
        owner: class name used in the error key, e.g. `"UNetEncoder"`.
        kwargs: the `**kwargs` the constructor received.
        allowed: the keyword arguments passed on to Keras.
        known: the constructor's own arguments, offered as did-you-mean suggestions.

    Raises:
        ConfigError: naming the first unknown key, with the closest known one.
    """
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"{owner}.{unknown[0]}",
                          f"unknown argument(s) {unknown}{closest(unknown[0], [*known, *allowed])}"
                          f". Received: {kwargs}")


def from_dict(cls, data, prefix=""):
    """Build dataclass `cls` from a mapping, recursing into nested dataclasses.

    Args:
        cls: a dataclass type.
        data: a mapping of field names to values; missing fields keep defaults.
        prefix: dotted path of `data` inside the whole config, for messages.

    Returns:
        An instance of `cls`.

    Raises:
        ConfigError: a key is not a field of `cls`, or a value has the wrong type.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(prefix or cls.__name__, f"expected a table of keys. Received: {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            raise ConfigError(dotted, f"unknown key{closest(key, fields)}; "
                              f"known keys: {', '.join(sorted(fields))}")
        values[key] = _coerce(hints[key], value, dotted)
    missing = [name for name, f in fields.items() if name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        dotted = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ConfigError(dotted, f"required key missing (required: {', '.join(missing)}). "
                          f"Received: {data!r}")
    return cls(**values)


def _coerce(hint, value, dotted):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, dotted)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, dotted)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else ConfigError(dotted, f"invalid value {value!r}")
    if origin is typing.Literal:
        # By type as well: `True == 1` and `3.0 == 3`, but neither is the choice 1 or 3.
        if not any(value == arg and type(value) is type(arg) for arg in args):
            raise ConfigError(dotted, f"must be one of {list(args)}{closest(value, args)}. "
                              f"Received: {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(dotted, f"expected a list. Received: {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(dotted, f"expected {len(args)} values. Received: {value!r}")
            return tuple(_coerce(a, v, dotted) for a, v in zip(args, value, strict=True))
        item = args[0] if args else typing.Any
        return origin(_coerce(item, v, dotted) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(dotted, f"expected a table. Received: {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(dotted, f"expected true or false. Received: {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(dotted, f"expected an integer. Received: {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(dotted, f"expected a number. Received: {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(dotted, f"expected a string. Received: {value!r}")
        return value
    return value


def to_dict(config):
    """Plain, JSON-ready dict of a dataclass config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def read_config_file(path):
    """Read a `.toml` or `.json` file into a dict.

    Raises:
        ConfigError: the file is missing or unreadable, has another suffix, is
            not UTF-8 text, does not parse, or does not hold a table of keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "config file not found")
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(str(path), "expected a .toml or .json file. "
                          f"Received suffix {path.suffix!r}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), f"is not UTF-8 text (byte {e.start} is "
                          f"{e.object[e.start:e.start + 1]!r}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(str(path), f"cannot be read: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(str(path), f"does not parse: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "expected a table of keys at the top of the file. "
                          f"Received a {type(data).__name__}: {str(data)[:80]}")
    return data


def set_dotted(data, dotted, value):
    """Set `data["a"]["b"] = value` for `dotted="a.b"`, creating the tables on the way.

    Returns:
        `data`.
    """
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def apply_overrides(data, overrides):
    """Apply `key.sub=value` strings to a nested dict, in place; returns it.

    Values are parsed as TOML values where they parse (`3`, `1e-4`, `true`,
    `[1, 2]`, `"x"`), else kept as bare strings.

    Raises:
        ConfigError: an override has no `=`.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "an override must look like key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(key, f"'{part}' is a value, not a table")
        node[parts[-1]] = value
    return data
