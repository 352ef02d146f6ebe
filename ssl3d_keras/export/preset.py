"""The Keras-native preset folder (keras-hub convention).

```
preset/
  config.json        keras.saving.serialize_keras_object(encoder)
  model.weights.h5   encoder.save_weights(...)
  metadata.json      inputs, outputs, pretraining recipe, versions, sha256 of the other files
```

Loading is strict: the weights file must hold exactly the weights of the
encoder the config describes (same paths, same shapes); anything missing or
unexpected is an `ExportError` that lists it. The old code loaded by layer
names with `skip_mismatch=True` and silently dropped the first convolution.

A preset may come from anyone, so `config.json` is checked before Keras sees
it (`check_config`): the model must be one of our registered encoder classes,
nested objects Keras built-ins, values plain JSON of bounded size; Keras then
deserializes it with `safe_mode=True` (no Python lambdas).
"""

import json
import math
import os
import re
import tempfile
from pathlib import Path

import h5py
import keras

from ssl3d_keras.atomic import atomic_dir
from ssl3d_keras.checksum import sha256_file
from ssl3d_keras.errors import ExportError
from ssl3d_keras.export import metadata as metadata_lib

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
# Bounds on a preset config.json: ours are a few hundred bytes of small numbers.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_INT = 1 << 16
MAX_CONFIG_NESTING = 16
MAX_CONFIG_ITEMS = 1000
_KERAS_MODULE = re.compile(r"keras(\.\w+)*")


def save_preset(encoder, out_dir, **metadata_kwargs):
    """Write the preset folder of `encoder` to `out_dir`, atomically.

    Args:
        encoder: a built `keras.Model` (registered class, e.g. `UNetEncoder`).
        out_dir: the preset folder (replaced if it exists).
        **metadata_kwargs: `task`, `config`, `summary`, `data` for `build_metadata`.

    Returns:
        The metadata dict written to `metadata.json`.
    """
    with atomic_dir(out_dir) as target:
        config = keras.saving.serialize_keras_object(encoder)
        (target / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        encoder.save_weights(str(target / WEIGHTS_FILE))
        files = {name: sha256_file(target / name) for name in (CONFIG_FILE, WEIGHTS_FILE)}
        meta = metadata_lib.build_metadata(encoder, files=files, **metadata_kwargs)
        (target / METADATA_FILE).write_text(metadata_lib.dumps(meta))
    return meta


def read_metadata(preset_dir):
    """The `metadata.json` dict of a preset folder.

    Raises:
        ExportError: the file is missing, is not JSON, or its `files` is not a
            mapping of plain file names (in the folder) to sha256 strings.
    """
    path = Path(preset_dir) / METADATA_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path}: preset metadata not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None
    files = meta.get("files", {}) if isinstance(meta, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(name, str) and isinstance(digest, str) and name not in ("", ".", "..")
            and "/" not in name and "\\" not in name for name, digest in files.items()):
        raise ExportError(f"{path}: not preset metadata (an object whose 'files' maps file "
                          "names in the preset folder to sha256)")
    return meta


def verify_files(preset_dir, meta=None):
    """Check the sha256 of every file listed in the metadata.

    Raises:
        ExportError: a listed file is missing or its sha256 differs.
    """
    preset_dir = Path(preset_dir)
    meta = meta or read_metadata(preset_dir)
    for name, expected in meta.get("files", {}).items():
        path = preset_dir / name
        if not path.is_file():
            raise ExportError(f"{path}: listed in metadata.json but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ExportError(f"{path}: sha256 differs from metadata.json. Expected {expected}, "
                              f"received {actual}")


def _h5_datasets(path):
    shapes = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            shapes[name] = tuple(obj.shape)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return shapes


def load_weights_strict(model, weights_file):
    """Load a `.weights.h5` into `model`, requiring an exact match.

    The expected layout is what `model.save_weights` writes; the file's
    datasets are compared by path and shape before loading.

    Raises:
        ExportError: listing missing weights, unexpected weights and shape mismatches.
    """
    weights_file = Path(weights_file)
    if not weights_file.is_file():
        raise ExportError(f"{weights_file}: weights file not found")
    with tempfile.TemporaryDirectory() as tmp:
        reference = os.path.join(tmp, "expected.weights.h5")
        model.save_weights(reference)
        expected = _h5_datasets(reference)
    try:
        got = _h5_datasets(weights_file)
    except OSError as e:
        raise ExportError(f"{weights_file}: not a readable HDF5 weights file ({e})") from None
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(f"{k}: expected {expected[k]}, file has {got[k]}"
                    for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing weights {missing}")
        if unexpected:
            problems.append(f"unexpected weights {unexpected}")
        if shapes:
            problems.append(f"shape mismatches {shapes}")
        raise ExportError(f"{weights_file}: weights do not match the model "
                          f"'{model.name}': " + "; ".join(problems))
    model.load_weights(str(weights_file))
    return model


def _registered_model_class(config, path):
    """The class a top-level config names, if it is one of our registered `keras.Model`s."""
    name = config.get("registered_name") or config["class_name"]
    found = keras.saving.get_registered_object(name) if isinstance(name, str) else None
    if not (isinstance(found, type) and issubclass(found, keras.Model)
            and found.__module__.startswith("ssl3d_keras.")
            and found.__name__ == config["class_name"]
            and config.get("module") in (None, found.__module__)):
        raise ExportError(f"{path}: the model must be an ssl3d_keras encoder class; refusing "
                          f"class_name={config['class_name']!r}, "
                          f"registered_name={config.get('registered_name')!r}, "
                          f"module={config.get('module')!r}")
    return found


def _check_object(value, path):
    """A nested serialized object may be a Keras built-in or one of our registered classes."""
    class_name, module = value.get("class_name"), value.get("module")
    if class_name in ("Lambda", "__lambda__"):
        raise ExportError(f"{path}: refusing a Lambda (Python code) in the model config")
    if module is None or (isinstance(module, str) and _KERAS_MODULE.fullmatch(module)):
        return
    found = keras.saving.get_registered_object(value.get("registered_name") or "")
    if found is None or getattr(found, "__module__", "") != module \
            or not module.startswith("ssl3d_keras."):
        raise ExportError(f"{path}: refusing class_name={class_name!r} from module={module!r}: "
                          "a preset may name only ssl3d_keras's registered classes and Keras "
                          "built-ins")


def _check_values(value, path, key, nesting=0):
    if nesting > MAX_CONFIG_NESTING:
        raise ExportError(f"{path}: the model config is nested deeper than {MAX_CONFIG_NESTING} "
                          f"levels (at '{key}')")
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if abs(value) > MAX_CONFIG_INT:
            raise ExportError(f"{path}: '{key}' = {value} is beyond the bound of "
                              f"{MAX_CONFIG_INT} for a model config value")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ExportError(f"{path}: '{key}' = {value} is not a finite number")
    elif isinstance(value, str):
        if len(value) > MAX_CONFIG_ITEMS:
            raise ExportError(f"{path}: '{key}' is a string of {len(value)} characters")
    elif isinstance(value, (list, dict)):
        if len(value) > MAX_CONFIG_ITEMS:
            raise ExportError(f"{path}: '{key}' holds {len(value)} items, more than "
                              f"{MAX_CONFIG_ITEMS}")
        if isinstance(value, dict):
            if "class_name" in value:
                _check_object(value, path)
            items = value.items()
        else:
            items = ((str(i), v) for i, v in enumerate(value))
        for name, item in items:
            _check_values(item, path, f"{key}.{name}", nesting + 1)
    else:
        raise ExportError(f"{path}: '{key}' has an unexpected type {type(value).__name__}")


def check_config(config, path=CONFIG_FILE):
    """Refuse a preset `config.json` that is not one of our encoders described in plain values.

    Args:
        config: the parsed JSON.
        path: where it came from, for the messages.

    Returns:
        The registered encoder class the config names.

    Raises:
        ExportError: not a serialized Keras object; a model class other than
            an ssl3d_keras registered `keras.Model`; a nested object from
            outside Keras and our registered classes, or a Lambda; a value
            that is not plain JSON, an integer beyond `MAX_CONFIG_INT`, a
            non-finite float, or a config too large or too deeply nested.
    """
    if not (isinstance(config, dict) and isinstance(config.get("class_name"), str)
            and isinstance(config.get("config"), dict)):
        raise ExportError(f"{path}: not a serialized Keras model (an object with class_name "
                          f"and config). Received: {type(config).__name__}")
    cls = _registered_model_class(config, path)
    _check_values(config["config"], path, config["class_name"])
    return cls


def read_config(preset_dir):
    """The checked `config.json` of a preset folder (see `check_config`).

    Raises:
        ExportError: missing, larger than `MAX_CONFIG_BYTES`, not JSON, or refused.
    """
    path = Path(preset_dir) / CONFIG_FILE
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ExportError(f"{path}: {path.stat().st_size} bytes, more than a model config "
                              f"can need ({MAX_CONFIG_BYTES})")
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ExportError(f"{path}: unreadable model config ({e})") from None
    check_config(config, path)
    return config


def load_preset(preset_dir, *, verify=True):
    """Rebuild the encoder of a preset folder with its weights.

    Args:
        preset_dir: folder with `config.json`, `model.weights.h5`, `metadata.json`.
        verify: check the files' sha256 against `metadata.json` first.

    Returns:
        `(encoder, metadata)`.

    Raises:
        ExportError: a missing or corrupt file, a refused config (see
            `check_config`), a config the encoder class rejects, or weights
            that do not match.
    """
    import ssl3d_keras.models  # noqa: F401  (registers the serialisable classes)

    preset_dir = Path(preset_dir)
    meta = read_metadata(preset_dir)
    if verify:
        verify_files(preset_dir, meta)
    config = read_config(preset_dir)
    try:
        encoder = keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as e:  # the class's own checks on a config from outside
        raise ExportError(f"{preset_dir / CONFIG_FILE}: the encoder cannot be built from it "
                          f"({type(e).__name__}: {e})") from None
    load_weights_strict(encoder, preset_dir / WEIGHTS_FILE)
    return encoder, meta
