"""`verify_recipe`: a sample prepared with a recipe's preprocessing, checked against its card."""

import copy
import dataclasses

import numpy as np
import pytest

from ssl3d_keras import zoo
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.zoo.verify import padding_share, sample_dataset, verify_recipe
from tests.zoo.helpers_ct import write_ct_decathlon


def small_ct_recipe(*, edge=32, **preprocess):
    """The pancreas-ct-rotation recipe with its resize and crop shrunk to `edge` (fast)."""
    recipe = zoo.get_recipe("pancreas-ct-rotation")
    pretrain = copy.deepcopy(recipe.pretrain)
    pretrain["data"]["input_size"] = edge
    table = pretrain["data"].setdefault("preprocess", {})
    table.pop("shape", None)
    table.update({"resize": [edge] * 3, "foreground_threshold": -500.0,
                  "crop_foreground": True, **preprocess})
    return dataclasses.replace(recipe, pretrain=pretrain)


def test_padding_share_against_hand_cases():
    volume = np.zeros((10, 8, 6, 1), np.float32)
    assert padding_share(volume) == 1.0
    volume[2:5, 1:7, 0:6] = 3.0  # a 3 x 6 x 6 box of 480 voxels
    assert padding_share(volume) == pytest.approx(1 - 108 / 480)
    # A thresholded foreground: values at or below the level are background.
    volume[9, 7, 5] = 0.2
    assert padding_share(volume, [0.5]) == pytest.approx(1 - 108 / 480)
    assert padding_share(volume) == pytest.approx(1 - (8 * 7 * 6) / 480)


def test_sample_spreads_over_the_cases_and_keeps_the_layout(tmp_path, rng):
    from ssl3d_keras.data.layouts import discover

    src = write_ct_decathlon(tmp_path / "src", rng, n=5, shape=(6, 6, 6))
    sample = sample_dataset(src, tmp_path / "sample", 3)
    source = discover(sample)
    assert source.layout == "decathlon" and source.channel_names == ("CT",)
    assert [c.case_id for c in source.cases] == ["pancreas_000", "pancreas_002", "pancreas_004"]
    assert all(c.label for c in source.cases)


def test_a_ct_folder_that_matches_the_recipe_passes(tmp_path, rng):
    src = write_ct_decathlon(tmp_path / "ct", rng, n=4)
    report = verify_recipe(small_ct_recipe(), src, cases=3)
    assert report.ok, report.failures()
    assert [c.case_id for c in report.cases] == ["pancreas_000", "pancreas_002", "pancreas_003"]
    for case in report.cases:
        assert case.shape == (32, 32, 32) and case.channels == 1
        assert 0.0 <= case.minimum < case.maximum <= 1.0
        assert case.padding_share < 0.1  # cropped to the body, then resized to fill the grid
    table = report.table()
    assert "pancreas_000" in table and "32x32x32" in table and "FAIL" not in table


def test_mostly_padding_fails_with_the_reason(tmp_path, rng):
    # Stored without the rescale intercept: air is 0 HU, so "> -500" keeps the whole field of
    # view; a centre pad to 64^3 (the old recipes' `shape`) then surrounds it with zeros.
    src = write_ct_decathlon(tmp_path / "ct0", rng, air=0.0, body=0.2)
    recipe = small_ct_recipe()
    table = recipe.pretrain["data"]["preprocess"]
    table.pop("resize")
    table.update(shape=[64, 64, 64])
    recipe.pretrain["data"]["input_size"] = 16
    report = verify_recipe(recipe, src, cases=2)
    assert not report.ok and len(report.cases) == 2
    for case in report.cases:
        assert case.padding_share > 0.5
        assert any("padding share" in p and "above the recipe's limit 0.5" in p
                   for p in case.problems), case.problems
    # The recipe's own limit is the one applied.
    relaxed = small_ct_recipe(max_padding_share=1.0)
    relaxed.pretrain["data"]["preprocess"].pop("resize")
    relaxed.pretrain["data"]["preprocess"]["shape"] = [64, 64, 64]
    assert not any("padding" in line for line in verify_recipe(relaxed, src, cases=1).failures())


def test_ct_without_its_rescale_intercept_fails(tmp_path, rng):
    # Air stored at 0 instead of -1000 HU: the -500 crop keeps everything and the resize hides
    # the padding, but no voxel reaches the window's low end.
    src = write_ct_decathlon(tmp_path / "ct0", rng, n=1, air=0.0)
    (line,) = verify_recipe(small_ct_recipe(), src, cases=1).failures()
    assert "no voxel near the CT window's low end" in line and "air at -1000 HU" in line


def test_wrong_channel_count_and_too_small_for_the_crop_fail(tmp_path, rng):
    src = write_ct_decathlon(tmp_path / "two", rng, n=1, channels=2)
    report = verify_recipe(small_ct_recipe(), src, cases=1)
    assert report.failures() == ["pancreas_000: 2 channel(s), the card says 1 (CT)"]

    one = write_ct_decathlon(tmp_path / "one", rng, n=1)
    recipe = small_ct_recipe()
    recipe.pretrain["data"]["input_size"] = 48  # larger than the 32^3 resize
    (line,) = verify_recipe(recipe, one, cases=1).failures()
    assert "smaller than the task's crop 48" in line
    # A 2D recipe reads slices: their in-plane size is what the crop needs.
    recipe.pretrain["data"].update(dim=2, slice_axis=2, input_size=24)
    assert verify_recipe(recipe, one, cases=1).ok


def test_shape_and_intensity_checks(tmp_path, rng):
    src = write_ct_decathlon(tmp_path / "ct", rng, n=1)
    recipe = small_ct_recipe()
    # A recipe whose card promises another grid than its preprocessing makes.
    recipe.pretrain["data"]["preprocess"]["shape"] = [32, 32, 30]
    shape, crop = verify_recipe(recipe, src, cases=1).failures()
    assert shape == "pancreas_000: shape 32x32x30, the recipe resizes to 32x32x32"
    assert crop.startswith("pancreas_000: the volume 32x32x30 is smaller than the task's crop 32")
    # No normalisation on HU values: the card's [0, 1] promise is not checked, but
    # "none" is still finite and not constant; minmax would be in range.
    raw = small_ct_recipe(normalize="none")
    assert verify_recipe(raw, src, cases=1).ok
    assert verify_recipe(small_ct_recipe(normalize="minmax"), src, cases=1).ok


def test_recipe_from_a_file_and_bad_arguments(tmp_path, rng):
    src = write_ct_decathlon(tmp_path / "ct", rng, n=1)
    with pytest.raises(ConfigError, match="cases"):
        verify_recipe("pancreas-ct-rotation", src, cases=0)
    with pytest.raises(ConfigError, match="did you mean 'pancreas-ct-rotation'"):
        verify_recipe("pancreas-ct-rotaton", src)
    with pytest.raises(ConfigError, match="not found"):
        verify_recipe(tmp_path / "missing.toml", src)


def test_fundus_photographs_are_resized_and_need_three_channels(tmp_path, rng):
    from PIL import Image

    def photographs(folder, mode, n=3):
        folder.mkdir()
        for i in range(n):
            pixels = rng.integers(1, 256, size=(60, 90, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(folder / f"eye_{i}.png")
        return folder

    report = verify_recipe("aptos-fundus-rotation-2d", photographs(tmp_path / "rgb", "RGB"))
    assert report.ok, report.failures()
    assert {(c.shape, c.channels) for c in report.cases} == {((224, 224), 3)}
    grey = verify_recipe("aptos-fundus-rotation-2d", photographs(tmp_path / "grey", "L"),
                         cases=1)
    assert grey.failures() == ["eye_0: 1 channel(s), the card says 3 (R, G, B)"]
