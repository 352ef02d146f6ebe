"""Volume sources: phantoms, shards and 2D slices as `tf.data` datasets of volumes."""

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.data.phantoms import make_phantom, write_phantom_dataset
from ssl3d_keras.data.sources import slice_case_id
from ssl3d_keras.data.volumes import open_volumes, phantom_volumes, shard_volumes, volume_slices
from ssl3d_keras.errors import ConfigError, DataError
from tests.data.test_pipeline import write_shards


def test_phantom_volumes_are_the_seeded_phantoms():
    items = list(phantom_volumes(3, size=10, channels=2, seed=4).as_numpy_iterator())
    assert [v["case_id"].decode() for v in items] == ["phantom_000", "phantom_001", "phantom_002"]
    for i, item in enumerate(items):
        image, label = make_phantom((4, i), size=10, channels=2)
        np.testing.assert_array_equal(item["image"], image)
        np.testing.assert_array_equal(item["label"], label)


def test_shard_volumes_read_all_cases_deterministically_and_split_by_file(tmp_path):
    write_shards(tmp_path, 5)
    dataset = shard_volumes(tmp_path)
    assert int(dataset.cardinality()) == 5
    first = [v["case_id"].decode() for v in dataset.as_numpy_iterator()]
    again = [v["case_id"].decode() for v in shard_volumes(tmp_path).as_numpy_iterator()]
    assert first == again and sorted(first) == [f"case_{i}" for i in range(5)]
    item = next(iter(dataset.as_numpy_iterator()))
    np.testing.assert_array_equal(item["image"], make_phantom(
        (7, int(item["case_id"][5:])), size=12, channels=2)[0])

    parts = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker)
        part = shard_volumes(tmp_path, input_context=context)
        parts.append({v["case_id"].decode() for v in part.as_numpy_iterator()})
        assert int(part.cardinality()) == len(parts[-1])
    assert parts[0] == {"case_0", "case_1", "case_4"} and parts[1] == {"case_2", "case_3"}
    too_many = tf.distribute.InputContext(num_input_pipelines=4, input_pipeline_id=3)
    with pytest.raises(DataError, match="cannot be split"):
        shard_volumes(tmp_path, input_context=too_many)


def test_open_volumes_sources(tmp_path):
    phantoms = open_volumes(None, phantoms=dict(n=2, size=10, channels=3))
    assert phantoms.element_spec["image"].shape == (10, 10, 10, 3)

    slices = open_volumes(None, dim=2, slice_axis=1, phantoms=dict(n=2, size=10))
    items = list(slices.as_numpy_iterator())
    assert len(items) == 20 and int(slices.cardinality()) == 20
    image, label = make_phantom((0, 1), size=10)
    np.testing.assert_array_equal(items[13]["image"], image[:, 3])
    np.testing.assert_array_equal(items[13]["label"], label[:, 3])
    assert items[13]["case_id"].decode() == slice_case_id("phantom_001", 1, 3, 10) == "phantom_001/y003"

    native = open_volumes(None, dim=2, phantoms=dict(n=2, size=10, dim=2))
    assert native.element_spec["image"].shape == (10, 10, 1)

    write_shards(tmp_path / "prepared", 3, size=8, channels=1, with_label=False)
    sliced = open_volumes(tmp_path / "prepared", dim=2)
    shard_slices = list(sliced.as_numpy_iterator())
    assert len(shard_slices) == 24 == int(sliced.cardinality())  # counted from the manifest
    assert shard_slices[0]["label"].shape == (0,)
    assert shard_slices[0]["image"].shape == (8, 8, 1)


def test_open_volumes_errors(tmp_path):
    write_phantom_dataset(tmp_path / "raw", 1, size=8)
    with pytest.raises(DataError, match="ssl3d prepare"):
        open_volumes(tmp_path / "raw")
    with pytest.raises(DataError, match="no such file"):
        open_volumes(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="phantoms.nn"):
        open_volumes(None, phantoms=dict(nn=3))
    with pytest.raises(ConfigError, match="2D"):
        open_volumes(None, dim=3, phantoms=dict(n=1, size=8, dim=2))
    with pytest.raises(ConfigError, match="slice_axis"):
        volume_slices(phantom_volumes(1, size=8), slice_axis=3)


def test_slices_cut_in_the_pipeline_are_named_like_prepared_slices():
    import tensorflow as tf

    from ssl3d_keras.data.volumes import _slice_case_ids

    for n in (1, 12, 1001):
        ids = [s.decode() for s in _slice_case_ids(tf.constant("c7"), 2, tf.constant(n)).numpy()]
        assert ids == [slice_case_id("c7", 2, i, n) for i in range(n)]
    assert ids[5] == "c7/z0005"
