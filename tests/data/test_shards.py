import hashlib
import json

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.data.shards import (
    MANIFEST_FORMAT,
    Manifest,
    ShardWriter,
    parse_example,
    read_manifest,
    serialize_example,
    write_manifest,
)
from ssl3d_keras.errors import DataError


def awkward_image(rng, shape):
    """float32 values whose bits a lossy path would change: negatives, -0, denormals, inf, nan."""
    image = (rng.standard_normal(shape) * 1e3).astype(np.float32)
    flat = image.reshape(-1)
    flat[:6] = [-0.0, 1e-45, -np.inf, np.inf, np.nan, np.float32(1) / 3]
    return image


def read_all(paths, **kwargs):
    dataset = tf.data.TFRecordDataset([str(p) for p in paths]).map(
        lambda record: parse_example(record, **kwargs))  # traced: parse is graph-safe
    return list(dataset.as_numpy_iterator())


@pytest.mark.parametrize("shape,with_label", [((5, 6, 7, 3), True), ((9, 4, 2), True),
                                              ((4, 4, 4, 1), False)])
def test_round_trip_is_bit_exact(tmp_path, rng, shape, with_label):
    image = awkward_image(rng, shape)
    label = rng.integers(-2**31, 2**31 - 1, shape[:-1]).astype(np.int32) if with_label else None
    path = tmp_path / "one.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(serialize_example("case/é", image, label))
    (parsed,) = read_all([path], dim=len(shape) - 1, channels=shape[-1])
    assert parsed["image"].dtype == np.float32 and parsed["image"].shape == shape
    np.testing.assert_array_equal(parsed["image"].view(np.uint32), image.view(np.uint32))
    if with_label:
        assert parsed["label"].dtype == np.int32
        np.testing.assert_array_equal(parsed["label"], label)
    else:
        assert parsed["label"].shape == (0,)
    assert parsed["case_id"].decode() == "case/é"


def test_writer_splits_into_shards_with_checksums(tmp_path, rng):
    images = [rng.standard_normal((4, 4, 4, 2)).astype(np.float32) for _ in range(5)]
    with ShardWriter(tmp_path, prefix="part", examples_per_shard=2) as writer:
        names = [writer.write(f"c{i}", image, np.full((4, 4, 4), i)) for i, image in
                 enumerate(images)]
    assert names == ["part-00000.tfrecord"] * 2 + ["part-00001.tfrecord"] * 2 + [
        "part-00002.tfrecord"]
    assert [s["count"] for s in writer.shards] == [2, 2, 1]
    for shard in writer.shards:
        data = (tmp_path / shard["path"]).read_bytes()
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
    assert not list(tmp_path.glob("*.tmp"))
    parsed = read_all([tmp_path / s["path"] for s in writer.shards])
    assert [p["case_id"].decode() for p in parsed] == [f"c{i}" for i in range(5)]
    for i, p in enumerate(parsed):
        np.testing.assert_array_equal(p["image"], images[i])
        assert (p["label"] == i).all()


def test_exception_mid_shard_leaves_no_finished_or_tmp_shard(tmp_path, rng):
    image = rng.standard_normal((4, 4, 4, 1)).astype(np.float32)
    with pytest.raises(RuntimeError, match="boom"):
        with ShardWriter(tmp_path, examples_per_shard=3) as writer:
            for i in range(4):
                writer.write(f"c{i}", image)
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000.tfrecord"]
    assert [s["count"] for s in writer.shards] == [3]


def test_manifest_round_trip_and_errors(tmp_path):
    manifest = {"format": MANIFEST_FORMAT, "dim": 3, "channels": 2, "shards": [],
                "affine": [[1.5, 0.0], [0.0, -2.0]]}
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == Manifest.from_dict(manifest)
    assert read_manifest(tmp_path)["affine"] == manifest["affine"]
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]

    with pytest.raises(DataError, match="ssl3d prepare"):
        read_manifest(tmp_path / "missing")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format": "other/9"}))
    with pytest.raises(DataError, match="other/9"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": MANIFEST_FORMAT}))
    with pytest.raises(DataError, match="lacks key"):
        read_manifest(tmp_path)


def test_manifest_write_is_atomic(tmp_path, monkeypatch):
    write_manifest(tmp_path, {"format": MANIFEST_FORMAT, "dim": 3, "channels": 1, "shards": []})
    with pytest.raises(ValueError):  # NaN is not JSON: the old manifest must survive intact
        write_manifest(tmp_path, {"format": MANIFEST_FORMAT, "dim": float("nan")})
    assert read_manifest(tmp_path)["dim"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
