import json
import time

import nibabel as nib
import numpy as np
import pytest

from ssl3d_keras.data import phantoms
from ssl3d_keras.data.phantoms import PHANTOM_LABELS, make_phantom, write_phantom_dataset
from ssl3d_keras.errors import ConfigError

LESION = max(PHANTOM_LABELS)
NAMES = {name: k for k, name in PHANTOM_LABELS.items()}


def centroid(label, value):
    return np.argwhere(label == value).mean(axis=0)


def test_same_seed_same_phantom_and_other_seed_differs():
    a_image, a_label = make_phantom(3, size=16, channels=2)
    b_image, b_label = make_phantom(3, size=16, channels=2)
    c_image, _ = make_phantom(4, size=16, channels=2)
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_label, b_label)
    assert not np.allclose(a_image, c_image)


@pytest.mark.parametrize("size,channels,dim", [(16, 1, 3), ((12, 16, 20), 3, 3), (24, 5, 2),
                                               ((16, 20), 2, 2)])
def test_shapes_dtypes_and_values(size, channels, dim):
    image, label = make_phantom(0, size=size, channels=channels, dim=dim)
    spatial = (size,) * dim if isinstance(size, int) else size
    assert image.shape == (*spatial, channels) and image.dtype == np.float32
    assert label.shape == spatial and label.dtype == np.int32
    assert set(np.unique(label)) <= set(PHANTOM_LABELS)
    assert np.isfinite(image).all() and image.min() >= 0  # Rician magnitudes are non-negative


def test_fixed_layout_is_asymmetric_along_every_axis_in_ras_order():
    label = make_phantom(0, size=48)[1]
    centre = (np.array(label.shape) - 1) / 2
    assert set(range(1, LESION)) <= set(np.unique(label))  # every structure is there
    left, right = NAMES["left nucleus"], NAMES["right nucleus"]
    assert centroid(label, left)[0] < centre[0] < centroid(label, right)[0]  # axis 0: L -> R
    assert (label == left).sum() > 1.5 * (label == right).sum()
    assert centroid(label, NAMES["eyes"])[1] > centre[1] + 10  # axis 1: P -> A
    assert centroid(label, NAMES["cerebellum"])[1] < centre[1] - 5
    assert centroid(label, NAMES["superior sinus"])[2] > centre[2] + 10  # axis 2: I -> S
    assert centroid(label, NAMES["brainstem"])[2] < centre[2] - 5


def test_pose_jitter_is_much_smaller_than_a_90_degree_rotation():
    def dice(a, b):  # multi-class Dice over the inner structures
        inner = a >= NAMES["ventricles"]
        return 2 * ((a == b) & inner).sum() / (inner.sum() + (b >= NAMES["ventricles"]).sum())

    labels = [make_phantom(s, size=32)[1] for s in range(3)]
    same = min(dice(a, b) for a in labels for b in labels)
    for plane in [(0, 1), (0, 2), (1, 2)]:
        for k in (1, 2, 3):
            rotated = max(dice(a, np.rot90(b, k, plane)) for a in labels for b in labels)
            assert rotated < same - 0.2, (plane, k, rotated, same)


def test_lesions_in_some_cases_only_and_inside_tissue():
    with_lesion = 0
    for seed in range(8):
        label = make_phantom(seed, size=24)[1]
        if (label == LESION).any():
            with_lesion += 1
            # Lesions grow inside tissue, never in the shells, ventricles or background.
            zs = np.argwhere(label == LESION)
            assert (zs > 0).all() and (zs < 23).all()
    assert 0 < with_lesion < 8


def test_channels_are_different_contrasts():
    image, label = make_phantom(1, size=32, channels=2)
    brain, ventricles = label == NAMES["brain"], label == NAMES["ventricles"]
    t1, t2 = image[..., 0], image[..., 1]
    assert t1[ventricles].mean() < 0.5 * t1[brain].mean()  # CSF dark on T1
    assert t2[ventricles].mean() > 1.5 * t2[brain].mean()  # bright on T2
    assert image[label == 0].std() > 0  # noise in the background


def test_64_cubed_phantom_is_fast():
    make_phantom(0, size=16)
    best = min(_timed(lambda s=s: make_phantom(s, size=64, channels=1)) for s in range(2))
    assert best < 0.5


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@pytest.mark.parametrize("kwargs,key", [({"size": 4}, "size"), ({"dim": 4}, "dim"),
                                        ({"channels": 0}, "channels"),
                                        ({"size": (16, 16)}, "size")])
def test_bad_arguments_raise_config_error(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        make_phantom(0, **kwargs)


def test_write_phantom_dataset_decathlon_layout(tmp_path):
    out = write_phantom_dataset(tmp_path / "ds", 2, size=12, channels=2, seed=5)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["modality"] == {"0": "T1-like", "1": "T2-like"}
    assert meta["labels"]["0"] == "background" and meta["labels"][str(LESION)] == "lesion"
    for i, case in enumerate(meta["training"]):
        image_nii = nib.load(out / case["image"])
        label_nii = nib.load(out / case["label"])
        expected_image, expected_label = make_phantom((5, i), size=12, channels=2)
        assert image_nii.shape == (12, 12, 12, 2)
        np.testing.assert_array_equal(image_nii.get_fdata(dtype=np.float32), expected_image)
        np.testing.assert_array_equal(np.asarray(label_nii.dataobj), expected_label)
        assert nib.aff2axcodes(image_nii.affine) == ("R", "A", "S")
        np.testing.assert_allclose(image_nii.header.get_zooms()[:3], (1, 1, 1))
    leftovers = [p.name for p in out.rglob("*") if ".tmp" in p.name]
    assert not leftovers


def test_write_2d_single_channel_and_callback(tmp_path):
    seen = []
    out = write_phantom_dataset(tmp_path, 3, size=16, dim=2, callback=lambda i, p: seen.append(i))
    assert seen == [0, 1, 2]
    assert nib.load(out / "imagesTr" / "phantom_002.nii.gz").shape == (16, 16, 1)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def failing_save(image, path):
        open(path, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_phantom_dataset(tmp_path, 1, size=8)
    assert not list((tmp_path / "imagesTr").iterdir())
    assert not (tmp_path / "dataset.json").exists()


def test_channel_intensities_extra_contrasts_are_seeded():
    a, b = phantoms.channel_intensities(6), phantoms.channel_intensities(6)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (len(PHANTOM_LABELS), 6) and (a[0] == 0).all()
    assert phantoms.channel_names(5)[-1] == "contrast-4"
