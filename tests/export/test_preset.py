"""Hostile presets: config.json and metadata.json from anyone give an ExportError, never an import."""

import json
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from ssl3d_keras.checksum import sha256_file
from ssl3d_keras.errors import ExportError
from ssl3d_keras.export.preset import (
    MAX_CONFIG_INT,
    check_config,
    load_preset,
    save_preset,
)
from ssl3d_keras.models import UNetEncoder


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    keras.utils.set_random_seed(5)
    encoder = UNetEncoder(input_channels=1, depth=1, base_filters=2)
    out = tmp_path_factory.mktemp("preset") / "preset"
    save_preset(encoder, out)
    return encoder, out


def _with_config(preset, tmp_path, edit):
    """A copy of the preset whose config.json is `edit(config)`, its metadata sha256 updated
    (so only the config check can refuse it, as for a hostile but self-consistent preset)."""
    copy = tmp_path / "hostile"
    shutil.copytree(preset, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(edit(config)))
    meta = json.loads((copy / "metadata.json").read_text())
    meta["files"]["config.json"] = sha256_file(copy / "config.json")
    (copy / "metadata.json").write_text(json.dumps(meta))
    return copy


def _inner(**changes):
    return lambda c: {**c, "config": {**c["config"], **changes}}


MARKER = "ssl3d_hostile_module_was_imported"

HOSTILE = [
    (lambda c: [c], "not a serialized Keras model"),
    (lambda c: {**c, "config": "x"}, "not a serialized Keras model"),
    (lambda c: {**c, "class_name": "Nope", "registered_name": "ssl3d>Nope"},
     "must be an ssl3d_keras encoder class"),
    (lambda c: {**c, "module": "os", "class_name": "system", "registered_name": None},
     "refusing class_name='system'"),
    (lambda c: {**c, "module": MARKER}, f"module='{MARKER}'"),
    (lambda c: {**c, "registered_name": "builtins>eval"}, "registered_name='builtins>eval'"),
    (lambda c: {"class_name": "Dense", "module": "keras.layers", "registered_name": None,
                "config": {"units": 3}}, "refusing class_name='Dense'"),  # a built-in, not ours
    (_inner(norm={"class_name": "Popen", "module": "subprocess", "config": {"args": "id"}}),
     "refusing class_name='Popen' from module='subprocess'"),
    (_inner(norm={"class_name": "__lambda__", "config": {"code": "00"}}), "Lambda"),
    (_inner(base_filters=10**12), "'UNetEncoder.base_filters' = 1000000000000 is beyond"),
    (_inner(depth=2**40), "beyond the bound"),
    (_inner(dropout=float("nan")), "not a finite number"),
    (_inner(dropout=float("inf")), "not a finite number"),
    (_inner(norm="x" * 5000), "a string of 5000 characters"),
    (_inner(input_size=list(range(2000))), "holds 2000 items"),
    (_inner(input_size=json.loads("[" * 40 + "]" * 40)), "nested deeper"),
    (_inner(depth="a"), r"cannot be built from it \(ConfigError"),
    (_inner(depth=-3), "cannot be built from it"),
    (_inner(evil=1), r"unknown argument"),
    (_inner(norm="no-such-norm"), "cannot be built from it"),
]


@pytest.mark.parametrize("edit, message", HOSTILE)
def test_hostile_configs_are_refused(preset, tmp_path, edit, message):
    _, folder = preset
    hostile = _with_config(folder, tmp_path, edit)
    with pytest.raises(ExportError, match=message):
        load_preset(hostile)
    assert MARKER not in sys.modules


def test_config_files_that_are_not_json_or_too_big(preset, tmp_path):
    _, folder = preset
    for content in (b"\xff\xfe not utf-8", b"{" * 100_000, b" " * (1 << 20) + b"{}"):
        copy = tmp_path / f"c{len(content)}"
        shutil.copytree(folder, copy)
        (copy / "config.json").write_bytes(content)
        with pytest.raises(ExportError, match="config.json"):
            load_preset(copy, verify=False)


def test_hostile_metadata_is_refused(preset, tmp_path):
    _, folder = preset
    for meta in ([], {"files": []}, {"files": {"../../etc/passwd": "0" * 64}},
                 {"files": {"/dev/zero": "0" * 64}}, {"files": {"config.json": 3}}):
        copy = tmp_path / f"m{len(list(tmp_path.iterdir()))}"
        shutil.copytree(folder, copy)
        (copy / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(ExportError, match="not preset metadata"):
            load_preset(copy)


def test_a_genuine_config_passes_and_loads(preset, rng):
    encoder, folder = preset
    config = json.loads((folder / "config.json").read_text())
    assert check_config(config) is UNetEncoder
    assert max(v for v in config["config"].values() if isinstance(v, int)) < MAX_CONFIG_INT
    loaded, _ = load_preset(folder)
    x = rng.normal(size=(1, 8, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded(x, training=False), encoder(x, training=False), atol=1e-6)


def test_keras_loading_keeps_safe_mode(tmp_path):
    """A Lambda in a .keras file is refused where the package loads one (a fine-tuned model),
    and no module turns safe mode off."""
    from ssl3d_keras.downstream.finetune import load_finetuned

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(tmp_path / "model.keras")
    (tmp_path / "config.json").write_text(json.dumps({"scratch": True}))
    with pytest.raises(ValueError, match="Lambda"):
        load_finetuned(tmp_path)
    package = Path(__file__).resolve().parents[2] / "ssl3d_keras"
    unsafe = [str(p) for p in package.rglob("*.py")
              if "safe_mode=False" in p.read_text() or "enable_unsafe_deserialization" in
              p.read_text()]
    assert unsafe == []
