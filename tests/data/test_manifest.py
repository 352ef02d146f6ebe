"""`Manifest`: the one reader and writer of a prepared folder's manifest.json."""

import json

import pytest

from ssl3d_keras.data.manifest import MANIFEST_FORMAT, Manifest
from ssl3d_keras.data.shards import read_manifest, write_manifest
from ssl3d_keras.errors import DataError

CASES = [{"id": "a", "final_shape": [6, 5, 4, 2], "shard": "shard-00000.tfrecord"},
         {"id": "b", "final_shape": [6, 3, 2, 2], "shard": "shard-00000.tfrecord"}]


def test_typed_fields_and_the_dict_face_agree_with_the_file(tmp_path):
    manifest = Manifest(dim=3, channels=2, cases=CASES, channel_names=["t1", "flair"],
                        extra={"affine": [[1.0]]})
    manifest.write(tmp_path)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["format"] == MANIFEST_FORMAT and on_disk["affine"] == [[1.0]]
    read = Manifest.read(tmp_path)
    assert read == manifest and read == on_disk  # equal to the typed record and to the dict
    assert read.channels == read["channels"] == 2
    assert read.get("label_names") is None and "cases" in read
    assert read_manifest(tmp_path) == read  # the old function reads the same record


def test_shapes_counts_and_small_cases_from_the_cases():
    manifest = Manifest(dim=3, channels=2, cases=CASES)
    assert manifest.spatial_shapes() == [(6, 5, 4), (6, 3, 2)]
    # 2D slices along axis 1: 5 slices of (6, 4) and 3 of (6, 2)
    assert manifest.spatial_shapes(dim=2, slice_axis=1) == [(6, 4)] * 5 + [(6, 2)] * 3
    assert manifest.example_count(dim=2, slice_axis=0) == 12
    assert manifest.cases_smaller_than((6, 4, 4)) == ["b"]
    assert manifest.cases_smaller_than((6, 4), dim=2, slice_axis=1) == ["b"]
    assert manifest.cases_smaller_than((7, 1, 1)) == ["a", "b"]


def test_write_checks_what_it_is_given(tmp_path):
    with pytest.raises(DataError, match="lacks key"):
        write_manifest(tmp_path, {"format": MANIFEST_FORMAT, "dim": 3})
    with pytest.raises(DataError, match="other/2"):
        write_manifest(tmp_path, {"format": "other/2", "dim": 3, "channels": 1, "shards": []})
    assert not (tmp_path / "manifest.json").exists()
    assert not Manifest.exists(tmp_path)
