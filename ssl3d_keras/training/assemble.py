"""`assemble_config`: the one way a pretraining config is put together.

`ssl3d pretrain`, `ssl3d zoo build` and `ssl3d_keras.zoo.build` all call it,
so a recipe given as `--config` and the same recipe built by the zoo resolve
to the same `PretrainConfig`. The layers, each overriding the one before:

1. the base: the stored `config.json` of a run being resumed, else `{}` (the
   `PretrainConfig` paper defaults) under a config file or recipe, else the
   quick demonstration config of the task (`quick_config`);
2. the config file or recipe table (a zoo recipe's `[pretrain]` table);
3. the task, the data path and the named options (steps, batch size, ...);
4. the `key=value` overrides (after dropping the base encoder's keys when an
   override switches `encoder.architecture`);
5. the phantom-size adjustment: a crop larger than the phantoms enlarges them.

Example:

>>> from ssl3d_keras.training.assemble import assemble_config
>>> config = assemble_config("rotation", steps=20, overrides=["encoder.depth=2"])
>>> config.steps, config.encoder["depth"], config.data.input_size
(20, 2, 32)
"""

import copy
from pathlib import Path

from ssl3d_keras.config import apply_overrides, from_dict, read_config_file, set_dotted
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.training.config import PretrainConfig, quick_config

__all__ = ["OPTION_KEYS", "assemble_config", "merge_config", "reset_encoder_for_new_architecture"]

# Named options and the config key each sets.
OPTION_KEYS = {
    "batch_size": "batch_size",
    "input_size": "data.input_size",
    "dim": "data.dim",
    "seed": "seed",
    "strategy": "strategy",
    "precision": "precision",
    "learning_rate": "optimizer.learning_rate",
}
# Tables replaced whole by a later layer rather than merged key by key: their
# keys belong to one task or one network.
_WHOLE_TABLES = ("task_config", "encoder")
_DEFAULT_PHANTOM_SIZE = 64


def _get(data, dotted, default=None):
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def merge_config(data, layer):
    """Merge a nested dict `layer` into `data` in place (layer values win); returns `data`.

    `task_config` and `encoder` are replaced whole, other tables merged key by key.
    """
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key not in _WHOLE_TABLES:
            merge_config(data[key], value)
        else:
            data[key] = copy.deepcopy(value)
    return data


def reset_encoder_for_new_architecture(data, overrides):
    """Drop the base encoder table when an override `encoder.architecture=X` switches network.

    The base config's encoder keys (e.g. the U-Net's `depth`) belong to its own
    architecture and would be unknown keys of another; later `encoder.*`
    overrides still apply.
    """
    chosen = apply_overrides({}, [o for o in overrides
                                  if o.split("=", 1)[0].strip() == "encoder.architecture"])
    new = chosen.get("encoder", {}).get("architecture")
    encoder = data.get("encoder") or {}
    if new is not None and new != encoder.get("architecture", "unet"):
        data["encoder"] = {}
    return data


def _config_table(config):
    """`(table, where)` of a config file path or a dict; a recipe's `[pretrain]` table is used."""
    if isinstance(config, dict):
        table, where = config, "the config"
    else:
        table, where = read_config_file(config), str(config)
    if not isinstance(table, dict):
        raise ConfigError(where, f"expected a table of keys. Received: {table!r}")
    if isinstance(table.get("pretrain"), dict):
        # A zoo recipe: its [pretrain] table is the PretrainConfig; the rest is its card.
        table = table["pretrain"]
    return copy.deepcopy(table), where


def assemble_config(task=None, *, config=None, stored=None, data=None, steps=None, epochs=None,
                    overrides=(), prefix="", **options):
    """Assemble a `PretrainConfig` from its layers (see the module docstring).

    Args:
        task: name of the proxy task, or None to take it from `config`
            (an error if neither names one).
        config: None, a `.toml`/`.json` file (a `PretrainConfig` or a zoo
            recipe) or a dict of either.
        stored: the stored config dict of a run being resumed, or None. It is
            the base; the other layers may change it (the run refuses changes).
        data: the data folder (raw or prepared), or None for the phantoms.
        steps: optimisation steps, or None. Setting it clears `epochs`.
        epochs: passes over the data, or None.
        overrides: `key=value` strings (`ssl3d_keras.config.apply_overrides`).
        prefix: dotted prefix of the keys in error messages (e.g. the recipe file).
        **options: `batch_size`, `input_size`, `dim`, `seed`, `strategy`,
            `precision`, `learning_rate` (None = not given).

    Returns:
        A `PretrainConfig` (not yet resolved against the data: see
        `ssl3d_keras.training.run.resolve_config`).

    Raises:
        ConfigError: both steps and epochs, a task that differs from the
            config's, an unknown option or key, or a value of the wrong type.
    """
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise ConfigError(unknown[0], f"unknown option; known: {', '.join(OPTION_KEYS)}. "
                          f"Received: {unknown}")
    if steps is not None and epochs is not None:
        raise ConfigError("steps", "give steps or epochs, not both. "
                          f"Received: steps={steps}, epochs={epochs}")
    table, where = _config_table(config) if config is not None else ({}, None)
    if stored is not None and not isinstance(stored, dict):
        raise ConfigError("config.json", "the stored config of the run is not a table of keys. "
                          f"Received a {type(stored).__name__}")
    if stored is not None:
        base = stored
    elif config is not None:
        base = {}  # a recipe is complete over the PretrainConfig (paper) defaults
    else:
        if task is None:
            raise ConfigError("task", "name a proxy task or give a config that does. "
                              "Received: task=None and no config")
        base = quick_config(task)
    if task is not None and table.get("task", task) != task:
        raise ConfigError("task", f"{where} pretrains '{table['task']}', not '{task}'. "
                          f"Received: task={task!r}")
    # A deep copy: quick_config shares nested tables with module constants.
    result = merge_config(copy.deepcopy(base), table)
    if task is not None:
        result["task"] = task
    if data is not None:
        set_dotted(result, "data.path", str(Path(data).resolve()))
    if steps is not None:
        result["steps"] = steps
        result["epochs"] = None
    if epochs is not None:
        result["epochs"] = epochs
    for name, value in options.items():
        if value is not None:
            set_dotted(result, OPTION_KEYS[name], value)
    input_size = options.get("input_size")
    if input_size is not None and _get(result, "data.path") is None:
        if input_size > _get(result, "data.phantoms.size", _DEFAULT_PHANTOM_SIZE):
            set_dotted(result, "data.phantoms.size", input_size)
    reset_encoder_for_new_architecture(result, overrides)
    apply_overrides(result, list(overrides))
    if "task" not in result:
        raise ConfigError("task", f"{where or 'the config'} names no proxy task. Received: "
                          "task=None")
    return from_dict(PretrainConfig, result, prefix=prefix)
