"""`export_run`: a pretraining run -> preset, SavedModel and hub archive, reproducibly."""

import json
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.config import from_dict
from ssl3d_keras.errors import ExportError
from ssl3d_keras.export import export_run, load_encoder
from ssl3d_keras.export.archive import sha256_file
from ssl3d_keras.export.exporter import resolve_formats
from ssl3d_keras.training import PretrainConfig, load_run, pretrain

TINY_JIGSAW = {
    "task": "jigsaw", "steps": 2, "batch_size": 2, "precision": "float32", "jit_compile": False,
    "checkpoint_every": 1,
    "encoder": {"depth": 1, "base_filters": 2, "norm": "batch", "dropout": 0.0},
    "task_config": {"grid": 2, "jitter": 1, "num_permutations": 4, "head_units": [8]},
    "data": {"input_size": 16, "phantoms": {"n": 2, "size": 16}},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    pretrain(from_dict(PretrainConfig, TINY_JIGSAW), out, verbose=False)
    return out


def test_export_all_formats(run_dir, tmp_path, rng):
    written = export_run(run_dir, tmp_path / "exp")
    meta = written["metadata"]
    preset = tmp_path / "exp" / "preset"
    assert sorted(p.name for p in preset.iterdir()) == ["config.json", "metadata.json",
                                                         "model.weights.h5"]
    assert meta["files"] == {n: sha256_file(preset / n) for n in ("config.json", "model.weights.h5")}
    assert json.loads((preset / "metadata.json").read_text()) == meta
    # What a user must feed and gets back.
    assert meta["input"]["channels"] == 1 and meta["input"]["orientation"] == "RAS"
    assert meta["input"]["min_input_size"] == 4 and meta["input"]["divisible_by"] == 2
    assert meta["outputs"]["features"] == {"stride": 4, "channels": 4}
    assert meta["outputs"]["skips"]["skip_1"] == {"stride": 1, "channels": 2}
    # The full proxy recipe, including the permutation set the task really used.
    task, _ = load_run(run_dir)
    pre = meta["pretraining"]
    assert pre["task"] == "jigsaw" and pre["steps"] == 2
    np.testing.assert_array_equal(pre["jigsaw_permutations"], np.asarray(task.permutations))
    assert pre["run_config"]["task_config"]["num_permutations"] == 4
    assert np.isfinite(pre["final_metrics"]["final_loss"])
    assert pre["final_metrics"]["chance_accuracy"] == pytest.approx(0.25)
    assert {"tensorflow", "keras", "ssl3d-keras"} <= set(meta["versions"])

    # Every format gives the trained encoder's outputs.
    x = rng.normal(size=(2, 8, 8, 8, 1)).astype(np.float32)
    expected = task.encoder(x, training=False)
    np.testing.assert_allclose(load_encoder(preset)(x), expected, atol=1e-5)
    loaded = tf.saved_model.load(str(tmp_path / "exp" / "savedmodel"))
    np.testing.assert_allclose(loaded(x, training=False), expected, atol=1e-5)
    with tarfile.open(tmp_path / "exp" / "hub.tar.gz") as tar:
        names = tar.getnames()
    assert "saved_model.pb" in names and "variables/variables.index" in names
    assert "assets.extra/ssl3d_metadata.json" in names
    np.testing.assert_allclose(load_encoder(tmp_path / "exp" / "hub.tar.gz",
                                            cache=tmp_path / "c")(x), expected, atol=1e-5)


def test_export_is_reproducible_and_checkpoint_selectable(run_dir, tmp_path):
    a = export_run(run_dir, tmp_path / "a", formats="preset")
    b = export_run(run_dir, tmp_path / "b", formats="preset")
    for name in ("config.json", "model.weights.h5", "metadata.json"):
        assert sha256_file(tmp_path / "a" / "preset" / name) == \
            sha256_file(tmp_path / "b" / "preset" / name), name
    first = export_run(run_dir, tmp_path / "c", formats=["preset"], checkpoint=1)
    assert first["metadata"]["pretraining"]["steps"] == 1
    assert first["metadata"]["files"]["model.weights.h5"] != \
        a["metadata"]["files"]["model.weights.h5"]
    assert b.keys() == {"preset", "metadata"}


def test_export_errors(tmp_path, run_dir):
    with pytest.raises(ExportError, match="not a pretraining run"):
        export_run(tmp_path, tmp_path / "out")
    with pytest.raises(ExportError, match="unknown export format"):
        resolve_formats(["preset", "onnx"])
    assert resolve_formats("all") == ("preset", "savedmodel", "hub")


def test_export_after_the_data_folder_is_deleted(tmp_path, rng):
    """A run records its data's facts in config.json: export needs only the run directory."""
    import shutil

    from ssl3d_keras.data.phantoms import channel_names, write_phantom_dataset
    from ssl3d_keras.data.prepare import prepare_dataset

    raw = write_phantom_dataset(tmp_path / "raw", 2, size=16)
    prepared = tmp_path / "prepared"
    prepare_dataset(raw, prepared, preprocess={"shape": [12, 12, 12]}, progress=False)
    config = {**TINY_JIGSAW, "data": {"path": str(prepared), "input_size": 12}}
    pretrain(from_dict(PretrainConfig, config), tmp_path / "run", verbose=False)
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["data"]["resolved"]["input_shape"] == [12, 12, 12, 1]
    assert stored["data"]["resolved"]["channel_names"] == channel_names(1)
    task, _ = load_run(tmp_path / "run")
    x = rng.normal(size=(1, 12, 12, 12, 1)).astype(np.float32)
    expected = task.encoder(x, training=False)

    shutil.rmtree(prepared)
    shutil.rmtree(raw)
    written = export_run(tmp_path / "run", tmp_path / "exp", formats="preset")
    meta = written["metadata"]
    assert meta["input"]["channel_names"] == channel_names(1)
    assert meta["pretraining"]["run_config"]["data"]["resolved"]["input_shape"] == [12, 12, 12, 1]
    np.testing.assert_allclose(load_encoder(tmp_path / "exp")(x), expected, atol=1e-5)
