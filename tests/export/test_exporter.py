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


# Whole-export atomicity: an export folder is one checkpoint's, whole, or refused.

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import keras  # noqa: E402

from ssl3d_keras.atomic import folder_lock  # noqa: E402
from ssl3d_keras.export import export_encoder  # noqa: E402
from ssl3d_keras.export.folder import read_marker  # noqa: E402
from ssl3d_keras.models import UNetEncoder  # noqa: E402

# A child that exports encoder(seed) into OUT and SIGKILLs itself at one moment: just before or
# just after the `os.replace` whose destination matches a pattern, or right after
# `tf.saved_model.save` returns. No clean-up code runs, as with a real kill.
KILL_EXPORT = r"""
import os, re, signal, sys
import keras
from ssl3d_keras.export import export_encoder, savedmodel
from ssl3d_keras.models import UNetEncoder

out, seed, when, pattern = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
real_replace = os.replace
def replace(src, dst, **kwargs):
    hit = re.search(pattern, os.fspath(dst))
    if hit and when == "before":
        die()
    real_replace(src, dst, **kwargs)
    if hit and when == "after":
        die()
os.replace = replace
real_save = savedmodel.tf.saved_model.save
def save(*args, **kwargs):
    real_save(*args, **kwargs)
    if when == "savedmodel":
        die()
savedmodel.tf.saved_model.save = save
keras.utils.set_random_seed(seed)
export_encoder(UNetEncoder(input_channels=1, depth=1, base_filters=2), out)
print("finished")
"""


def _tiny_encoder(seed):
    keras.utils.set_random_seed(seed)
    return UNetEncoder(input_channels=1, depth=1, base_filters=2)


def _outputs(model, x):
    return np.asarray(model(x, training=False))


@pytest.fixture(scope="module")
def probe():
    return np.random.default_rng(0).normal(size=(1, 8, 8, 8, 1)).astype(np.float32)


def _kill_export(out, seed, when, pattern=""):
    proc = subprocess.run([sys.executable, "-c", KILL_EXPORT, str(out), str(seed), when, pattern],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


KILL_MOMENTS = [
    # (when, dst pattern, which export OUT holds afterwards); one in CI (about 10 s), the
    # hand-built crash states of tests/test_atomic.py cover the rest fast
    ("after", r"/\.exp\.old-[0-9a-f]{8}/exp$", "old"),  # between the two renames of the swap
    pytest.param("before", r"/export\.json$", "old",  # every part written, the marker not yet
                 marks=pytest.mark.slow),
    pytest.param("savedmodel", "", "old", marks=pytest.mark.slow),  # SavedModel half placed
    pytest.param("before", r"/hub\.tar\.gz$", "old", marks=pytest.mark.slow),  # archive written
    pytest.param("after", r"(?<!\.exp\.old-[0-9a-f]{8})/exp$", "new",  # swapped, old not removed
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("when, pattern, holds", KILL_MOMENTS)
def test_a_killed_re_export_leaves_one_whole_export(tmp_path, probe, when, pattern, holds):
    out = tmp_path / "exp"
    export_encoder(_tiny_encoder(1), out)
    old, new = _outputs(_tiny_encoder(1), probe), _outputs(_tiny_encoder(2), probe)
    assert np.abs(old - new).max() > 1e-3

    _kill_export(out, 2, when, pattern)
    # Whatever the moment, loading OUT gives one whole export: the old or the new, never a mix
    # (a missing OUT is put back from where the swap set it aside). The child's seed-2 weights
    # need not equal this process's, so "new" is: not the old one, and the same in every part.
    preset = _outputs(load_encoder(out), probe)
    hub = _outputs(load_encoder(out / "hub.tar.gz", cache=tmp_path / "c"), probe)
    np.testing.assert_allclose(hub, preset, atol=1e-6)
    if holds == "old":
        np.testing.assert_allclose(preset, old, atol=1e-6)
    else:
        assert np.abs(preset - old).max() > 1e-3
    assert read_marker(out)["formats"] == ["preset", "savedmodel", "hub"]

    export_encoder(_tiny_encoder(2), out)  # the next export cleans every leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "exp"]
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "hub.tar.gz", "preset",
                                                     "savedmodel"]
    np.testing.assert_allclose(_outputs(load_encoder(out), probe), new, atol=1e-6)


def test_re_export_replaces_the_whole_folder(tmp_path, probe):
    out = tmp_path / "exp"
    export_encoder(_tiny_encoder(1), out)
    (out / ".old-abcd1234").mkdir()  # what older versions left inside an export
    (out / ".preset-xyz").mkdir()
    written = export_encoder(_tiny_encoder(2), out, formats="preset")
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "preset"]
    assert written.keys() == {"preset", "metadata"}
    marker = read_marker(out)
    assert marker["formats"] == ["preset"] and marker["source"] is None
    assert marker["files"] == {f"preset/{n}": sha256_file(out / "preset" / n)
                               for n in ("config.json", "metadata.json", "model.weights.h5")}
    np.testing.assert_allclose(_outputs(load_encoder(out), probe),
                               _outputs(_tiny_encoder(2), probe), atol=1e-6)


def test_an_export_folder_is_loaded_only_whole(tmp_path, probe):
    import shutil

    a, b = tmp_path / "a", tmp_path / "b"
    export_encoder(_tiny_encoder(1), a)
    export_encoder(_tiny_encoder(2), b, formats="preset")
    mixed = tmp_path / "mixed"  # preset of one export beside the SavedModel of another
    shutil.copytree(a, mixed)
    shutil.rmtree(mixed / "preset")
    shutil.copytree(b / "preset", mixed / "preset")
    with pytest.raises(ExportError, match=r"'preset/[\w.]+' differs from export.json"
                                          r".*re-run `ssl3d export"):
        load_encoder(mixed)
    shutil.rmtree(mixed / "preset")  # a part missing: refused, not loaded from the SavedModel
    with pytest.raises(ExportError, match=r"listed in export.json but missing"):
        load_encoder(mixed)
    legacy = tmp_path / "legacy"  # an export without the marker (older version, or by hand)
    shutil.copytree(a, legacy)
    (legacy / "export.json").unlink()
    with pytest.raises(ExportError, match=r"no export.json.*re-run `ssl3d export"):
        load_encoder(legacy)
    (b / "preset" / "stray.txt").write_text("x")
    with pytest.raises(ExportError, match=r"stray.txt'\] not listed in export.json"):
        load_encoder(b)
    # Each part is still a handle of its own, checked by its own metadata.
    np.testing.assert_allclose(_outputs(load_encoder(legacy / "preset"), probe),
                               _outputs(_tiny_encoder(1), probe), atol=1e-6)


def test_export_refuses_foreign_folders_and_a_second_writer(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(ExportError, match=r"not part of an export.*\['todo.txt'\]"):
        export_encoder(_tiny_encoder(1), notes)
    assert (notes / "todo.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="is a file"):
        export_encoder(_tiny_encoder(1), tmp_path / "file")
    with folder_lock(tmp_path / "exp"):
        with pytest.raises(ExportError, match=rf"being written by another process: pid "
                                              rf"{os.getpid()} on host "):
            export_encoder(_tiny_encoder(1), tmp_path / "exp")


def test_a_full_disk_keeps_the_previous_export(tmp_path, monkeypatch, probe):
    import errno

    from ssl3d_keras.export import exporter

    out = tmp_path / "exp"
    export_encoder(_tiny_encoder(1), out)
    before = read_marker(out)

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(exporter, "write_tar_gz", full)
    with pytest.raises(ExportError, match=rf"{out}: writing the export failed .*No space left.*"
                                          "earlier export there is unchanged"):
        export_encoder(_tiny_encoder(2), out)
    assert read_marker(out) == before and [p.name for p in tmp_path.iterdir()] == ["exp"]
    np.testing.assert_allclose(_outputs(load_encoder(out), probe),
                               _outputs(_tiny_encoder(1), probe), atol=1e-6)


def test_export_json_names_the_run_and_checkpoint(run_dir, tmp_path):
    export_run(run_dir, tmp_path / "latest", formats="preset")
    export_run(run_dir, tmp_path / "first", formats="preset", checkpoint=1)
    for name, step in (("latest", 2), ("first", 1)):
        source = read_marker(tmp_path / name)["source"]
        assert source == {"run": str(run_dir.absolute()), "checkpoint": f"ckpt-{step}",
                          "checkpoint_sha256": sha256_file(run_dir / "checkpoints" /
                                                           f"ckpt-{step}.index")}


def test_a_full_disk_inside_tensorflow_is_an_export_error(tmp_path, monkeypatch):
    from ssl3d_keras.export import savedmodel

    def save(*args, **kwargs):
        raise tf.errors.OutOfRangeError(None, None, "variables_temp/part-00000: File too large "
                                        "[Op:SaveV2]")

    monkeypatch.setattr(savedmodel.tf.saved_model, "save", save)
    with pytest.raises(ExportError, match=r"writing the export failed \(variables_temp/part-00000"
                                          r": File too large \[Op:SaveV2\]\); an earlier"):
        export_encoder(_tiny_encoder(1), tmp_path / "exp")
    assert list(tmp_path.iterdir()) == []
