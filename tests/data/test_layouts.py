"""Dataset layouts: discovery, auto-detection, loading, slices and deterministic splits."""

import json

import numpy as np
import pytest
from PIL import Image

from ssl3d_keras.data.layouts import BRATS_LABELS, detect_layout, discover
from ssl3d_keras.data.nifti import load_nifti
from ssl3d_keras.data.sources import Case, split_cases
from ssl3d_keras.errors import ConfigError, DataError
from tests.data.helpers_nifti import LAS_AFFINE, blob, write_brats, write_decathlon, write_nifti


def test_folder_layout_sorted_and_nested(tmp_path, rng):
    for name in ["b.nii.gz", "a.nii", "sub/c.nii.gz"]:
        write_nifti(tmp_path / name, rng.normal(size=(4, 5, 6)), dtype=np.float32)
    (tmp_path / "readme.txt").write_text("not a volume")
    source = discover(tmp_path)
    assert source.layout == "folder" and source.dim == 3
    assert [c.case_id for c in source.cases] == ["a", "b", "sub/c"]
    assert source.label_names is None and source.channel_names == ("image",)
    case = source.load(source.cases[2])
    assert case.image.shape == (4, 5, 6, 1) and case.label is None
    assert case.sources == (str((tmp_path / "sub/c.nii.gz").resolve()),)


def test_folder_time_frames_are_cases(tmp_path, rng):
    data = rng.normal(size=(4, 4, 4, 3)).astype(np.float32)
    write_nifti(tmp_path / "run.nii.gz", data)
    source = discover(tmp_path, four_d="time")
    assert [c.case_id for c in source.cases] == ["run/t000", "run/t001", "run/t002"]
    np.testing.assert_array_equal(source.load(source.cases[2]).image[..., 0], data[..., 2])


def test_decathlon_layout(tmp_path, rng):
    write_decathlon(tmp_path, 3, rng, channels=2, affine=LAS_AFFINE)
    source = discover(tmp_path)
    assert source.layout == "decathlon"
    assert source.channel_names == ("mod0", "mod1")
    assert source.label_names == {0: "background", 1: "organ", 2: "tumour"}
    assert [c.case_id for c in source.cases] == ["case_000", "case_001", "case_002"]
    case = source.load(source.cases[1])
    raw = load_nifti(tmp_path / "imagesTr/case_001.nii.gz", canonical=False).array
    np.testing.assert_array_equal(case.image, raw[::-1])  # LAS -> RAS
    assert case.image.shape == (8, 8, 8, 2) and case.label.shape == (8, 8, 8)
    assert set(np.unique(case.label)) == {0, 1, 2}
    assert case.spacing == (2.0, 3.0, 4.0)
    assert discover(tmp_path / "dataset.json").layout == "decathlon"


def test_decathlon_case_errors_name_the_case(tmp_path, rng):
    write_decathlon(tmp_path, 3, rng, channels=1)
    image, label = blob(rng, (8, 8, 8))
    label[0, 0, 0] = 7
    write_nifti(tmp_path / "labelsTr/case_000.nii.gz", label)
    write_nifti(tmp_path / "labelsTr/case_001.nii.gz", label[:, :, :7])
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    write_nifti(tmp_path / "labelsTr/case_002.nii.gz", np.zeros((8, 8, 8), np.uint8), shifted)
    source = discover(tmp_path)
    with pytest.raises(DataError, match=r"case_000.*\[7\] are not among the declared"):
        source.load(source.cases[0])
    with pytest.raises(DataError, match=r"case_001: image and label shapes differ"):
        source.load(source.cases[1])
    with pytest.raises(DataError, match=r"case_002: image and label affines differ"):
        source.load(source.cases[2])
    (tmp_path / "imagesTr/case_002.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case_002: file not found"):
        source.load(source.cases[2])


def test_decathlon_bad_json_and_empty(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="does not parse"):
        discover(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": "CT"}, "labels": {}}))
    with pytest.raises(DataError, match="no 'training' key"):
        discover(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"modality": {"0": "CT"}, "labels": {"0": "bg"}, "training": []}))
    with pytest.raises(DataError, match="has no case"):
        discover(tmp_path)


def test_brats_layout_order_and_remap(tmp_path, rng):
    write_brats(tmp_path, 2, rng)
    source = discover(tmp_path)
    assert source.layout == "brats"
    assert source.channel_names == ("t1", "t1ce", "t2", "flair")
    assert source.label_names == BRATS_LABELS
    case = source.load(source.cases[0])
    # write_brats adds 1000 * (index in its modality list) to each channel.
    offsets = case.image[0, 0, 0]
    np.testing.assert_allclose(offsets, [0, 1000, 2000, 3000])
    assert set(np.unique(case.label)) == {0, 1, 2, 3}  # 4 remapped to 3
    reordered = discover(tmp_path, modalities=("flair", "t1"))
    assert reordered.channel_names == ("flair", "t1")
    np.testing.assert_allclose(reordered.load(reordered.cases[0]).image[0, 0, 0], [3000, 0])


def test_brats_missing_modality_and_other_suffixes(tmp_path, rng):
    write_brats(tmp_path, 2, rng, ext=".nii")
    (tmp_path / "BraTS_001/BraTS_001_t2.nii").unlink()
    source = discover(tmp_path)
    assert source.load(source.cases[0]).image.shape == (8, 8, 8, 4)
    with pytest.raises(DataError, match=r"^BraTS_001: missing modality 't2'"):
        source.load(source.cases[1])
    with pytest.raises(ConfigError, match="modalities"):
        discover(tmp_path, modalities=("t1", "t1"))
    dashed = tmp_path / "dashed"
    image, label = blob(rng, (8, 8, 8))
    for mod in ("t1n", "t2f", "seg"):
        write_nifti(dashed / "c1" / f"c1-{mod}.nii.gz", label if mod == "seg" else image)
    source = discover(dashed, layout="brats", modalities=["t1n", "t2f"])
    assert source.load(source.cases[0]).image.shape == (8, 8, 8, 2)


def test_csv_manifest_channels_label_grade(tmp_path, rng):
    image, label = blob(rng, (6, 6, 6))
    write_nifti(tmp_path / "vol/a_t1.nii.gz", image)
    write_nifti(tmp_path / "vol/a_t2.nii.gz", image * 2)
    write_nifti(tmp_path / "vol/a_seg.nii.gz", label)
    write_nifti(tmp_path / "vol/b_t1.nii.gz", image)
    write_nifti(tmp_path / "vol/b_t2.nii.gz", image * 3)
    (tmp_path / "cases.csv").write_text(
        "case_id,image,label,grade\n"
        "b,vol/b_t1.nii.gz;vol/b_t2.nii.gz,,1\n"
        "a,vol/a_t1.nii.gz; vol/a_t2.nii.gz,vol/a_seg.nii.gz,0\n")
    assert detect_layout(tmp_path) == "csv"
    source = discover(tmp_path / "cases.csv")
    assert source.layout == "csv"
    assert [(c.case_id, c.grade, c.label is not None) for c in source.cases] == [
        ("a", 0, True), ("b", 1, False)]
    b = source.load(source.cases[1])
    np.testing.assert_allclose(b.image[..., 1], b.image[..., 0] * 3)
    assert b.label is None
    assert source.load(source.cases[0]).label.shape == (6, 6, 6)


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_images2d_folder_and_aptos_csv(tmp_path, rng):
    pixels = rng.integers(0, 256, size=(10, 12, 3)).astype(np.uint8)
    _write_png(tmp_path / "photos/img_b.png", pixels)
    _write_png(tmp_path / "photos/img_a.png", pixels[::-1].copy())
    source = discover(tmp_path / "photos")
    assert source.layout == "images2d" and source.dim == 2
    assert [c.case_id for c in source.cases] == ["img_a", "img_b"]
    loaded = source.load(source.cases[1])
    assert loaded.image.dtype == np.float32 and loaded.image.shape == (10, 12, 3)
    np.testing.assert_array_equal(loaded.image, pixels)

    aptos = tmp_path / "aptos"
    _write_png(aptos / "train_images/000c1434d8d7.png", pixels)
    _write_png(aptos / "train_images/001639a390f0.png", pixels[:, ::-1].copy())
    (aptos / "train.csv").write_text("id_code,diagnosis\n001639a390f0,4\n000c1434d8d7,2\n")
    source = discover(aptos)
    assert source.layout == "images2d"
    assert [(c.case_id, c.grade) for c in source.cases] == [("000c1434d8d7", 2),
                                                            ("001639a390f0", 4)]
    np.testing.assert_array_equal(source.load(source.cases[1]).image, pixels[:, ::-1])

    gray = tmp_path / "gray"
    _write_png(gray / "g.png", pixels[..., 0])
    source = discover(gray)
    assert source.channel_names == ("gray",)
    np.testing.assert_array_equal(source.load(source.cases[0]).image[..., 0], pixels[..., 0])


def test_slices_of_canonical_volumes(tmp_path, rng):
    write_decathlon(tmp_path, 2, rng, size=8, channels=1, affine=LAS_AFFINE)
    volumes = discover(tmp_path)
    source = discover(tmp_path, layout="slices", slice_axis=2)
    assert source.layout == "slices" and source.dim == 2
    assert len(source.cases) == 2 * 8
    assert source.cases[3].case_id == "case_000/z003"
    vol = volumes.load(volumes.cases[1])
    s = source.load(next(c for c in source.cases if c.case_id == "case_001/z005"))
    np.testing.assert_array_equal(s.image, vol.image[:, :, 5])
    np.testing.assert_array_equal(s.label, vol.label[:, :, 5])
    assert s.spacing == (2.0, 3.0)
    # The slice's voxel (i, j) is the volume's voxel (i, j, 5) in world coordinates.
    np.testing.assert_allclose(s.affine @ [2, 3, 0, 1], vol.affine @ [2, 3, 5, 1])
    along_x = discover(tmp_path, slice_axis=0)
    assert along_x.cases[0].case_id == "case_000/x000"
    np.testing.assert_array_equal(along_x.load(along_x.cases[0]).image,
                                  volumes.load(volumes.cases[0]).image[0])


def test_auto_detection_and_errors(tmp_path, rng):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="unknown dataset layout"):
        discover(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/a.txt").write_text("x")
    with pytest.raises(DataError, match="unknown dataset layout"):
        discover(tmp_path / "junk")
    with pytest.raises(DataError, match="not found"):
        discover(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="did you mean 'brats'"):
        discover(tmp_path / "junk", layout="brat")
    (tmp_path / "bad.csv").write_text("path,grade\nx,1\n")
    with pytest.raises(DataError, match="'image' column"):
        discover(tmp_path / "bad.csv")
    with pytest.raises(ConfigError, match="slice_axis"):
        discover(tmp_path / "junk", slice_axis=3)


def _ids(splits):
    return [[c.case_id for c in split] for split in splits]


def test_split_cases_deterministic_disjoint_grouped(tmp_path, rng):
    cases = [Case(f"case_{i:02d}", (f"/d/{i}.nii",)) for i in range(20)]
    a = split_cases(cases, (0.6, 0.2, 0.2), seed=3)
    assert _ids(a) == _ids(split_cases(list(reversed(cases)), (0.6, 0.2, 0.2), seed=3))
    assert [len(s) for s in a] == [12, 4, 4]
    flat = sum(_ids(a), [])
    assert sorted(flat) == sorted(c.case_id for c in cases) and len(set(flat)) == 20
    assert _ids(a) != _ids(split_cases(cases, (0.6, 0.2, 0.2), seed=4))
    assert [len(s) for s in split_cases(cases, (0.5,), seed=0)] == [10]
    with pytest.raises(ConfigError, match="fractions"):
        split_cases(cases, (0.8, 0.4), seed=0)
    # All slices of one volume go to the same split (no patient leak).
    write_decathlon(tmp_path, 4, rng, size=8, channels=1)
    slices = discover(tmp_path, slice_axis=0).cases
    train, test = split_cases(slices, (0.5, 0.5), seed=1)
    parents = [{c.case_id.split("/")[0] for c in s} for s in (train, test)]
    assert len(train) == len(test) == 16 and not parents[0] & parents[1]


def test_four_d_time_only_for_folders_and_unlabelled_aptos(tmp_path, rng):
    write_decathlon(tmp_path / "dec", 1, rng, channels=2)
    with pytest.raises(ConfigError, match="four_d"):
        discover(tmp_path / "dec", four_d="time")
    _write_png(tmp_path / "test_images/abc.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "test.csv").write_text("id_code\nabc\n")
    source = discover(tmp_path / "test.csv")
    assert source.layout == "images2d" and source.cases[0].grade is None


def test_decathlon_unlabelled_test_cases_on_request(tmp_path, rng):
    write_decathlon(tmp_path, 3, rng, channels=1, n_test=2)
    assert [c.case_id for c in discover(tmp_path).cases] == ["case_000", "case_001", "case_002"]
    source = discover(tmp_path, unlabelled=True)
    assert [c.case_id for c in source.cases] == [f"case_{i:03d}" for i in range(5)]
    assert [c.label is None for c in source.cases] == [False] * 3 + [True] * 2
    assert source.cases[3].images == (str((tmp_path / "imagesTs/case_003.nii.gz").resolve()),)
    loaded = source.load(source.cases[4])
    assert loaded.image.shape == (8, 8, 8, 1) and loaded.label is None
    # Slices of the unlabelled volumes come too.
    assert len(discover(tmp_path, unlabelled=True, slice_axis=0).cases) == 5 * 8

    # Without a "test" key the imagesTs folder is read.
    meta = json.loads((tmp_path / "dataset.json").read_text())
    del meta["test"]
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    assert len(discover(tmp_path, unlabelled=True).cases) == 5


def test_decathlon_unlabelled_errors(tmp_path, rng):
    write_decathlon(tmp_path / "a", 2, rng, channels=1, n_test=1)
    meta = json.loads((tmp_path / "a/dataset.json").read_text())
    meta["test"] = ["./imagesTs/case_002.nii.gz", "./imagesTs/case_001.nii.gz"]
    (tmp_path / "a/imagesTs/case_001.nii.gz").write_bytes(
        (tmp_path / "a/imagesTs/case_002.nii.gz").read_bytes())
    (tmp_path / "a/dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"dataset.json: the unlabelled case .*imagesTs/"
                       r"case_001.nii.gz has the id 'case_001' of the case .*imagesTr/"
                       r"case_001.nii.gz"):
        discover(tmp_path / "a", unlabelled=True)
    assert len(discover(tmp_path / "a").cases) == 2  # the clash matters only when asked for

    write_decathlon(tmp_path / "b", 2, rng, channels=1)  # "test": [] and no imagesTs
    with pytest.raises(DataError, match="has no unlabelled cases to add"):
        discover(tmp_path / "b", unlabelled=True)
    write_brats(tmp_path / "c", 1, rng)
    with pytest.raises(ConfigError, match="'unlabelled'.*Received layout 'brats'"):
        discover(tmp_path / "c", unlabelled=True)
