"""prepare_dataset: shards that read back to what load + preprocess give, manifest, atomicity."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.data import prepare as prepare_module
from ssl3d_keras.data.layouts import discover
from ssl3d_keras.data.prepare import prepare_dataset, prepare_owned, summary_line
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


def test_a_run_owned_folder_is_reused_or_prepared_again_after_a_kill(tmp_path, rng, caplog):
    src = write_decathlon(tmp_path / "src", 3, rng, size=8, channels=1)
    out = tmp_path / "prepared"
    first = prepare_owned(src, out, examples_per_shard=1, progress=False)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert prepare_owned(src, out, progress=False) == first  # finished: reused as it is
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    # As a kill while the manifest was written leaves it: shards and the writer's temporary file.
    (out / "manifest.json").rename(out / ".manifest.json.abcd1234.tmp.json")
    with caplog.at_level("WARNING", logger="ssl3d_keras"):
        again = prepare_owned(src, out, examples_per_shard=1, progress=False)
    assert "leftovers of an interrupted prepare" in caplog.text
    assert again["cases"] == first["cases"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *_shard_files(out)]


def test_overwrite_also_removes_a_killed_writers_temporary_manifest(tmp_path, rng):
    src = write_decathlon(tmp_path / "src", 2, rng, size=8, channels=1)
    out = tmp_path / "out"
    prepare_dataset(src, out, progress=False)
    (out / "manifest.json").rename(out / ".manifest.json.abcd1234.tmp.json")
    with pytest.raises(DataError, match="no manifest.json"):
        prepare_dataset(src, out, progress=False)
    prepare_dataset(src, out, overwrite=True, progress=False)
    assert not list(out.glob(".manifest.json.*"))


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


def _dice(a, b):
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_resized_case_goes_back_to_the_source_grid(tmp_path, rng):
    """Prepare (crop, resize, pad) a labelled case, then write its label back with the affines."""
    from ssl3d_keras.data.pipeline import shard_volumes
    from ssl3d_keras.downstream.geometry import write_prediction
    from tests.data.helpers_nifti import write_nifti

    image = np.full((16, 12, 10), -1000.0, np.float32)  # CT air around a body
    image[3:13, 2:11, 2:9] = rng.normal(40, 5, size=(10, 9, 7))
    label = np.zeros((16, 12, 10), np.uint8)
    label[5:11, 4:9, 3:7] = 1
    label[7:9, 5:7, 4:6] = 2
    src = tmp_path / "src"
    write_nifti(src / "imagesTr/c.nii.gz", image, LAS_AFFINE)
    write_nifti(src / "labelsTr/c.nii.gz", label, LAS_AFFINE)
    (src / "dataset.json").write_text(
        '{"modality": {"0": "CT"}, "labels": {"0": "bg", "1": "organ", "2": "tumour"}, '
        '"training": [{"image": "./imagesTr/c.nii.gz", "label": "./labelsTr/c.nii.gz"}]}')
    config = PreprocessConfig(crop_foreground=True, foreground_threshold=-500, resize=(24, 14, 9),
                              normalize="ct", ct_window=(-100, 240), shape=(26, 14, 8))
    manifest = prepare_dataset(src, tmp_path / "out", preprocess=config, progress=False)
    (case,) = manifest["cases"]
    # The crop keeps the body (10 x 9 x 7 voxels of 2 x 3 x 4 mm); the resize keeps its extent.
    assert case["crop_box"] is not None
    assert case["resize"] == {"from_shape": [10, 9, 7], "to_shape": [24, 14, 9],
                              "spacing": pytest.approx([20 / 24, 27 / 14, 28 / 9])}
    assert case["spacing"] == case["resize"]["spacing"]
    assert case["padding_share"] == pytest.approx(1 - 24 * 14 * 8 / (26 * 14 * 8))
    (volume,) = list(shard_volumes(tmp_path / "out").as_numpy_iterator())
    assert volume["label"].shape == (26, 14, 8)

    out = write_prediction(tmp_path / "pred.nii.gz", volume["label"], case["affine"],
                           case["sources"][0])
    import nibabel as nib

    back = np.asarray(nib.load(str(out)).dataobj)
    assert back.shape == label.shape
    for value in (1, 2):
        assert _dice(back == value, label == value) >= (0.95 if value == 1 else 0.75), value
    assert _dice(back > 0, label > 0) >= 0.95
    # The affine is what undoes the resize: dropping its scaling misplaces the label.
    wrong = np.asarray(case["affine"]).copy()
    wrong[:3, :3] /= np.divide(case["resize"]["from_shape"], case["resize"]["to_shape"])
    off = write_prediction(tmp_path / "wrong.nii.gz", volume["label"], wrong, case["sources"][0])
    assert _dice(np.asarray(nib.load(str(off)).dataobj) > 0, label > 0) < 0.8


def test_photographs_are_resized_by_the_same_option(tmp_path):
    from PIL import Image

    src = tmp_path / "photos"
    src.mkdir()
    h, w = 30, 50  # non-square
    rows, cols = np.mgrid[0:h, 0:w]
    pixels = np.stack([cols * 5, rows * 8, np.full((h, w), 77)], axis=-1).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(src / "eye.png")
    manifest = prepare_dataset(src, tmp_path / "out", progress=False,
                               preprocess={"resize": (224, 224), "normalize": "none"})
    (case,) = manifest["cases"]
    assert manifest["channels"] == 3 and case["final_shape"] == [224, 224, 3]
    assert case["resize"]["from_shape"] == [30, 50]
    assert case["spacing"] == pytest.approx([30 / 224, 50 / 224])
    records = _read_shards(tmp_path / "out", manifest)
    image, _ = records["eye"]
    # Cell-centred linear interpolation of a ramp is the ramp at the new centres (inside).
    centres_x = (np.arange(224) + 0.5) * (w / 224) - 0.5
    centres_y = (np.arange(224) + 0.5) * (h / 224) - 0.5
    inside_x = (centres_x >= 0) & (centres_x <= w - 1)
    inside_y = (centres_y >= 0) & (centres_y <= h - 1)
    np.testing.assert_allclose(image[100, inside_x, 0], 5 * centres_x[inside_x], atol=1e-3)
    np.testing.assert_allclose(image[inside_y, 100, 1], 8 * centres_y[inside_y], atol=1e-3)
    np.testing.assert_allclose(image[..., 2], 77.0, atol=1e-4)


def test_padding_share_recorded_and_warned(tmp_path, rng, caplog):
    import logging

    src = write_decathlon(tmp_path / "src", 3, rng, size=8, channels=1)
    with caplog.at_level(logging.WARNING, logger="ssl3d_keras"):
        manifest = prepare_dataset(src, tmp_path / "out", progress=False)
    # The blob fills 4 of 8 voxels per axis: 7/8 of each volume is zero background.
    assert [c["padding_share"] for c in manifest["cases"]] == [pytest.approx(0.875)] * 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == [f"case_00{i}: 88% of the prepared volume is padding (outside the "
                         f"foreground's bounding box), more than max_padding_share=50%"
                         for i in range(3)]
    assert lines[3].startswith("3 of 3 prepared cases are more than 50% padding")
    assert len(lines) == 4
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ssl3d_keras"):
        prepare_dataset(src, tmp_path / "out2", progress=False,
                        preprocess={"max_padding_share": 0.9, "crop_foreground": True})
    assert caplog.records == []


def test_a_huge_resample_names_the_file_and_is_skipped(tmp_path, rng):
    from tests.data.helpers_nifti import write_nifti

    src = tmp_path / "src"
    write_nifti(src / "a_ok.nii.gz", rng.random((6, 6, 6)).astype(np.float32))
    bad = write_nifti(src / "b_wrong_pixdim.nii.gz", rng.random((6, 6, 6)).astype(np.float32),
                      np.diag([2000.0, 1.0, 1.0, 1.0]))  # plausible per header, huge here
    config = {"spacing": (0.1, 0.1, 0.1)}
    with pytest.raises(DataError, match=f"^{bad}: resampling to spacing .* more than "
                       f"max_voxels=134,217,728"):
        prepare_dataset(src, tmp_path / "fail", preprocess=config, progress=False)
    manifest = prepare_dataset(src, tmp_path / "skip", preprocess=config, on_error="skip",
                               progress=False)
    assert [c["id"] for c in manifest["cases"]] == ["a_ok"]
    assert "max_voxels" in manifest["skipped"][0]["reason"]
