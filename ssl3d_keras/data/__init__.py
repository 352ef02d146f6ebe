"""Data: NIfTI I/O, dataset layouts, preprocessing, shards, phantoms and tf.data pipelines.

The front door, from a folder on disk to batches of examples:

- `discover(path, layout="auto")`: the cases of a dataset and a loader per case;
- `prepare_dataset(src, out_dir, preprocess=...)`: preprocessed TFRecord shards
  plus their `Manifest` (`manifest.json`);
- `open_volumes(prepared_dir_or_None, dim=3)`: a `tf.data.Dataset` of volumes
  (None: synthetic phantoms);
- `make_pipeline(volumes, transform, batch_size=...)`: seeded crops, a task's
  transform, batches.

The names are imported on first use, so `import ssl3d_keras.data` does not
import TensorFlow.

Example:

>>> from ssl3d_keras import data
>>> volumes = data.open_volumes(None, phantoms={"n": 2, "size": 16})
>>> volumes.element_spec["image"].shape
TensorShape([16, 16, 16, 1])
"""

import importlib

__all__ = ["Manifest", "discover", "make_pipeline", "open_volumes", "prepare_dataset"]

_LAZY = {
    "Manifest": "ssl3d_keras.data.manifest",
    "discover": "ssl3d_keras.data.layouts",
    "prepare_dataset": "ssl3d_keras.data.prepare",
    "open_volumes": "ssl3d_keras.data.volumes",
    "make_pipeline": "ssl3d_keras.data.pipeline",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'ssl3d_keras.data' has no attribute '{name}'")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__():
    return sorted([*globals(), *_LAZY])
