"""TFRecord shards of prepared volumes and their manifest.

One `tf.train.Example` per case holds the raw little-endian bytes of the image
(float32 `(*spatial, C)`) and of the label (int32 `(*spatial)`, empty when the
case has none) with their shapes, so a round trip is bit-exact. Shards are
written under a temporary name and renamed when complete, so a reader never
sees half a shard; `manifest.json` says what the shards hold and how they were
made (`ssl3d_keras.data.manifest.Manifest`).
"""

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from ssl3d_keras.checksum import sha256_file
from ssl3d_keras.data.manifest import MANIFEST_FORMAT, MANIFEST_NAME, Manifest

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "Manifest", "ShardWriter", "file_sha256",
           "parse_example", "read_manifest", "serialize_example", "write_manifest"]


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def serialize_example(case_id, image, label=None):
    """Serialise one case to a `tf.train.Example` string.

    Args:
        case_id: str.
        image: array `(*spatial, C)`, stored as float32.
        label: optional integer array `(*spatial)`, stored as int32.

    Returns:
        bytes.
    """
    image = np.ascontiguousarray(image, dtype="<f4")
    label = np.zeros((0,), "<i4") if label is None else np.ascontiguousarray(label, dtype="<i4")
    label_shape = () if label.size == 0 and label.ndim == 1 else label.shape
    features = {
        "image": _bytes_feature(image.tobytes()),
        "image_shape": _int64_feature(image.shape),
        "image_dtype": _bytes_feature(b"float32"),
        "label": _bytes_feature(label.tobytes()),
        "label_shape": _int64_feature(label_shape),
        "case_id": _bytes_feature(str(case_id).encode()),
    }
    # deterministic: the features map's order would otherwise change from one
    # process to the next, and with it the shard bytes and their sha256.
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)


_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "image_shape": tf.io.VarLenFeature(tf.int64),
    "image_dtype": tf.io.FixedLenFeature([], tf.string, default_value="float32"),
    "label": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "label_shape": tf.io.VarLenFeature(tf.int64),
    "case_id": tf.io.FixedLenFeature([], tf.string),
}


def parse_example(serialized, *, dim=None, channels=None):
    """Parse one serialised case back to tensors (graph-safe, bit-exact).

    Args:
        serialized: scalar `tf.string`, one record of a shard.
        dim: optional int (2 or 3); when given the output ranks are static.
        channels: optional int; when given the channel axis is static.

    Returns:
        dict with `image` float32 `(*spatial, C)`, `label` int32 `(*spatial)`
        or shape `(0,)` when the case has no label, `case_id` scalar `tf.string`.
    """
    parsed = tf.io.parse_single_example(serialized, _FEATURES)
    tf.debugging.assert_equal(
        parsed["image_dtype"], tf.constant("float32"),
        message="shard image dtype must be float32",
    )
    image_shape = tf.sparse.to_dense(parsed["image_shape"])
    image = tf.reshape(tf.io.decode_raw(parsed["image"], tf.float32), image_shape)
    label_shape = tf.sparse.to_dense(parsed["label_shape"])
    raw_label = tf.io.decode_raw(parsed["label"], tf.int32)
    label = tf.cond(
        tf.size(label_shape) > 0,
        lambda: tf.reshape(raw_label, label_shape),
        lambda: tf.zeros([0], tf.int32),
    )
    if dim is not None:
        image = tf.ensure_shape(image, [None] * dim + [channels])
    return {"image": image, "label": label, "case_id": parsed["case_id"]}


# The one sha256 helper, under the name this module has always exported.
file_sha256 = sha256_file


class ShardWriter:
    """Writes cases to numbered TFRecord shards, each renamed into place when complete.

    Args:
        out_dir: folder of the shards (created if missing).
        prefix: str, file name prefix. Default `"shard"`, giving
            `shard-00000.tfrecord`, `shard-00001.tfrecord`, ...
        examples_per_shard: int >= 1, cases per shard. Default 16.

    A shard in progress is `<name>.tmp`; it becomes `<name>` when it holds
    `examples_per_shard` cases or when the writer closes. If the `with` block
    raises, the shard in progress is deleted (finished shards stay).

    Example:

    >>> with ShardWriter("shards") as writer:  # doctest: +SKIP
    ...     writer.write("case_0", image, label)
    >>> writer.shards  # doctest: +SKIP
    [{'path': 'shard-00000.tfrecord', 'count': 1, 'sha256': '...'}]
    """

    def __init__(self, out_dir, *, prefix="shard", examples_per_shard=16):
        if int(examples_per_shard) < 1:
            raise ValueError(
                f"examples_per_shard must be >= 1. Received: examples_per_shard={examples_per_shard}"
            )
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.examples_per_shard = int(examples_per_shard)
        self.shards = []
        self._writer = None
        self._name = None
        self._count = 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def _tmp_path(self):
        return self.out_dir / f"{self._name}.tmp"

    def write(self, case_id, image, label=None):
        """Append one case.

        Args:
            case_id: str.
            image: array `(*spatial, C)` (stored as float32).
            label: optional integer array `(*spatial)` (stored as int32).

        Returns:
            str, the file name of the shard the case went to.
        """
        if self._writer is None:
            self._name = f"{self.prefix}-{len(self.shards):05d}.tfrecord"
            self._writer = tf.io.TFRecordWriter(str(self._tmp_path()))
            self._count = 0
        self._writer.write(serialize_example(case_id, image, label))
        self._count += 1
        name = self._name
        if self._count >= self.examples_per_shard:
            self._finish()
        return name

    def _finish(self):
        self._writer.close()
        self._writer = None
        final = self.out_dir / self._name
        os.replace(self._tmp_path(), final)
        self.shards.append({"path": self._name, "count": self._count, "sha256": file_sha256(final)})

    def close(self):
        """Finish the shard in progress (if any)."""
        if self._writer is not None:
            self._finish()

    def abort(self):
        """Drop the shard in progress without finishing it."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._tmp_path().unlink(missing_ok=True)


def write_manifest(out_dir, manifest):
    """Write `manifest.json` atomically (temp file in the same folder, then rename).

    Args:
        out_dir: the shard folder.
        manifest: a `Manifest`, or a dict of its keys (checked by `Manifest.from_dict`).

    Returns:
        `Path` of the manifest.
    """
    return Manifest.from_dict(manifest, where=Path(out_dir) / MANIFEST_NAME).write(out_dir)


def read_manifest(out_dir):
    """Read and check a shard folder's `manifest.json` (same as `Manifest.read`).

    Returns:
        `Manifest` (it also reads like the JSON dict: `manifest["cases"]`).

    Raises:
        DataError: the manifest is missing, not JSON, of another format or
            lacks a required key.
    """
    return Manifest.read(out_dir)
