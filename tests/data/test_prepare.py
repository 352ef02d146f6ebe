"""prepare_dataset: shards that read back to what load + preprocess give, manifest, atomicity."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.data import prepare as prepare_module
from ssl3d_keras.data.layouts import discover
from ssl3d_keras.data.prepare import prepare_dataset, summary_line
from ssl3d_keras.data.preprocess import PreprocessConfig, preprocess
from ssl3d_keras.data.shards import parse_example, read_manifest
from ssl3d_keras.errors import DataError
from tests.data.helpers_nifti import LAS_AFFINE, write_brats, write_decathlon


def _read_shards(out_dir, manifest):
    records = {}
    for shard in manifest["shards"]:
        for raw in tf.data.TFRecordDataset(str(out_dir / shard["path"])):
            ex = parse_example(raw)
            records[ex["case_id"].numpy().decode()] = (ex["image"].numpy(), ex["label"].numpy())
    return records


def _shard_files(out_dir):
    return sorted(p.name for p in out_dir.iterdir() if ".tfrecord" in p.name)


def test_decathlon_round_trip_and_manifest(tmp_path, rng):
    src = write_decathlon(tmp_path / "src", 3, rng, size=8, channels=2, affine=LAS_AFFINE)
    config = PreprocessConfig(spacing=(2.0, 2.0, 2.0), crop_foreground=True, shape=(4, 4, 4))
    out = tmp_path / "out"
    manifest = prepare_dataset(src, out, preprocess=config, examples_per_shard=2, progress=False)
    assert read_manifest(out) == manifest
    assert manifest["format"] == "ssl3d-shards/1"
    assert manifest["dim"] == 3 and manifest["channels"] == 2
    assert manifest["channel_names"] == ["mod0", "mod1"]
    assert manifest["label_names"] == {"0": "background", "1": "organ", "2": "tumour"}
    assert [s["count"] for s in manifest["shards"]] == [2, 1]
    assert _shard_files(out) == ["shard-00000.tfrecord", "shard-00001.tfrecord"]
    assert manifest["preprocessing"]["spacing"] == [2.0, 2.0, 2.0]
    assert manifest["skipped"] == []
    source = discover(src)
    records = _read_shards(out, manifest)
    for case, entry in zip(source.cases, manifest["cases"], strict=True):
        loaded = source.load(case)
        image, label, _ = preprocess(loaded.image, loaded.label, loaded.spacing, config)
        got_image, got_label = records[case.case_id]
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_label, label)
        assert entry["id"] == case.case_id
        assert entry["original_shape"] == [8, 8, 8, 2]
        assert entry["final_shape"] == [4, 4, 4, 2]
        assert entry["original_spacing"] == [2.0, 3.0, 4.0]
        assert entry["sha256"] == [hashlib.sha256(open(p, "rb").read()).hexdigest()
                                   for p in entry["sources"]]
        assert len(entry["sources"]) == 2 and entry["shard"].startswith("shard-")
        affine = np.asarray(entry["affine"])
        assert affine.shape == (4, 4) and np.all(np.diag(affine)[:3] > 0)


def test_skip_bad_case_and_fail_leaves_nothing(tmp_path, rng):
    src = write_brats(tmp_path / "src", 3, rng)
    (src / "BraTS_001/BraTS_001_flair.nii.gz").unlink()
    blob = (src / "BraTS_002/BraTS_002_t1.nii.gz").read_bytes()
    (src / "BraTS_002/BraTS_002_t1.nii.gz").write_bytes(blob[: len(blob) // 2])
    out = tmp_path / "skip"
    manifest = prepare_dataset(src, out, on_error="skip", progress=False)
    assert [c["id"] for c in manifest["cases"]] == ["BraTS_000"]
    skipped = {s["id"]: s["reason"] for s in manifest["skipped"]}
    assert set(skipped) == {"BraTS_001", "BraTS_002"}
    assert "missing modality 'flair'" in skipped["BraTS_001"]
    assert "BraTS_002_t1.nii.gz" in skipped["BraTS_002"]
    assert manifest["channel_names"] == ["t1", "t1ce", "t2", "flair"]
    assert summary_line(manifest, out) == (
        f"prepared 1 cases into 1 shards at {out} (2 skipped: see manifest.json)")
    failed = tmp_path / "fail"
    with pytest.raises(DataError, match="BraTS_001: missing modality 'flair'"):
        prepare_dataset(src, failed, on_error="fail", progress=False, examples_per_shard=1)
    assert list(failed.iterdir()) == []  # the finished shard of BraTS_000 was removed too


def test_refuses_existing_output_unless_overwrite(tmp_path, rng):
    src = write_decathlon(tmp_path / "src", 3, rng, size=8, channels=1)
    out = tmp_path / "out"
    prepare_dataset(src, out, examples_per_shard=1, progress=False)
    assert len(_shard_files(out)) == 3
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="already holds a prepared dataset"):
        prepare_dataset(src, out, progress=False)
    assert len(read_manifest(out)["shards"]) == 3
    manifest = prepare_dataset(src, out, examples_per_shard=3, overwrite=True, progress=False)
    assert _shard_files(out) == ["shard-00000.tfrecord"]  # stale shards 1 and 2 removed
    assert manifest["shards"][0]["count"] == 3
    assert (out / "notes.txt").read_text() == "mine"
    (out / "manifest.json").unlink()  # as after a killed prepare: shards, no manifest
    with pytest.raises(DataError, match="no manifest.json"):
        prepare_dataset(src, out, progress=False)


def test_interrupted_prepare_leaves_no_manifest_or_shard(tmp_path, rng, monkeypatch):
    src = write_decathlon(tmp_path / "src", 4, rng, size=8, channels=1)
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return preprocess(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "preprocess_case", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(src, out, examples_per_shard=1, progress=False)
    assert list(out.iterdir()) == []


def test_slices_and_progress_bar(tmp_path, rng, capsys):
    src = write_decathlon(tmp_path / "src", 2, rng, size=8, channels=1)
    manifest = prepare_dataset(src, tmp_path / "out", layout="slices", slice_axis=1,
                               preprocess={"normalize": "minmax"}, progress=True)
    assert manifest["dim"] == 2 and len(manifest["cases"]) == 16
    assert manifest["cases"][0]["id"] == "case_000/y000"
    assert manifest["cases"][0]["final_shape"] == [8, 8, 1]
    assert manifest["preprocessing"]["discover"] == {"slice_axis": 1}
    assert "preparing" in capsys.readouterr().err


def test_phantom_decathlon_dataset(tmp_path):
    from ssl3d_keras.data.phantoms import PHANTOM_LABELS, write_phantom_dataset

    src = write_phantom_dataset(tmp_path / "phantoms", 2, size=16, channels=2, seed=0)
    manifest = prepare_dataset(src, tmp_path / "out", progress=False)
    assert len(manifest["cases"]) == 2 and manifest["channels"] == 2
    assert {int(k) for k in manifest["label_names"]} == set(PHANTOM_LABELS)
    assert manifest["cases"][0]["final_shape"] == [16, 16, 16, 2]


def test_aptos_photographs_record_grades(tmp_path, rng):
    from PIL import Image

    src = tmp_path / "aptos"
    (src / "train_images").mkdir(parents=True)
    for name in ("a1", "b2"):
        pixels = rng.integers(0, 256, size=(6, 7, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(src / "train_images" / f"{name}.png")
    (src / "train.csv").write_text("id_code,diagnosis\nb2,3\na1,0\nzz,1\n")
    manifest = prepare_dataset(src, tmp_path / "out", on_error="skip", progress=False,
                               preprocess={"normalize": "minmax"})
    assert manifest["layout"] == "images2d" and manifest["dim"] == 2
    assert manifest["channel_names"] == ["red", "green", "blue"]
    assert [(c["id"], c["grade"]) for c in manifest["cases"]] == [("a1", 0), ("b2", 3)]
    assert manifest["skipped"][0]["id"] == "zz" and "not found" in manifest["skipped"][0]["reason"]


def test_a_bad_first_file_of_a_folder_is_skipped_not_fatal(tmp_path, rng):
    from tests.data.helpers_nifti import write_nifti

    src = tmp_path / "src"
    src.mkdir()
    write_nifti(src / "a_flat.nii.gz", rng.random((8, 8)).astype(np.float32))  # first by id
    write_nifti(src / "b_good.nii.gz", rng.random((8, 8, 8)).astype(np.float32))
    manifest = prepare_dataset(src, tmp_path / "out", on_error="skip", progress=False)
    assert [c["id"] for c in manifest["cases"]] == ["b_good"]
    assert manifest["skipped"][0]["id"] == "a_flat"
    assert "is 2D" in manifest["skipped"][0]["reason"]
    with pytest.raises(DataError, match="a_flat.nii.gz: is 2D"):
        prepare_dataset(src, tmp_path / "out2", on_error="fail", progress=False)
