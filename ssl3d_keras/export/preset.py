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
"""

import json
import os
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
        ExportError: the file is missing or is not JSON.
    """
    path = Path(preset_dir) / METADATA_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path}: preset metadata not found") from None
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: not valid JSON ({e})") from None


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


def load_preset(preset_dir, *, verify=True):
    """Rebuild the encoder of a preset folder with its weights.

    Args:
        preset_dir: folder with `config.json`, `model.weights.h5`, `metadata.json`.
        verify: check the files' sha256 against `metadata.json` first.

    Returns:
        `(encoder, metadata)`.

    Raises:
        ExportError: a missing or corrupt file, or weights that do not match.
    """
    import ssl3d_keras.models  # noqa: F401  (registers the serialisable classes)

    preset_dir = Path(preset_dir)
    meta = read_metadata(preset_dir)
    if verify:
        verify_files(preset_dir, meta)
    try:
        config = json.loads((preset_dir / CONFIG_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError) as e:
        raise ExportError(f"{preset_dir / CONFIG_FILE}: unreadable model config ({e})") from None
    encoder = keras.saving.deserialize_keras_object(config)
    load_weights_strict(encoder, preset_dir / WEIGHTS_FILE)
    return encoder, meta
