"""What an exported encoder needs as input and gives as output: `metadata.json`.

The metadata is the contract with the user of an export: modality, channels
and their order, axis order and orientation, voxel spacing, intensity
normalisation, minimum input size and divisibility, the output shapes, and how
the encoder was pretrained (the full task recipe, including the jigsaw
permutation set; steps; final proxy metrics), with the package versions.
It holds no dates, so exporting the same checkpoint twice gives the same bytes.
"""

import json
from importlib.metadata import PackageNotFoundError, version

import numpy as np

FORMAT = "ssl3d-encoder/1"
AXIS_ORDER = {
    3: "(batch, D, H, W, C): channels-last; D, H, W are the canonical RAS voxel axes "
       "(nibabel as_closest_canonical: axis 0 -> Right, 1 -> Anterior, 2 -> Superior)",
    2: "(batch, H, W, C): channels-last image rows, columns, channels",
}
_PACKAGES = ("ssl3d-keras", "tensorflow", "keras", "tensorflow-hub", "tf-keras", "numpy", "h5py")


def package_versions():
    """`{package: version}` of the packages an export depends on (missing ones omitted)."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def jsonable(value):
    """`value` with numpy arrays/scalars and tuples turned into JSON types, recursively."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "numpy"):
        return jsonable(value.numpy())
    return value


def output_shapes(encoder):
    """Output strides and channels, measured by running the encoder once.

    Returns:
        `{"features": {"stride": s, "channels": c}, "skips": {name: {...}}}`:
        an input `(batch, *spatial, C)` gives `(batch, *spatial // s, c)`.
    """
    from ssl3d_keras.export.savedmodel import skips_model_of

    shape = list(encoder.inputs[0].shape[1:])
    size = 2 * int(getattr(encoder, "min_input_size", 8))
    spatial = [s if s is not None else size for s in shape[:-1]]
    x = np.zeros((1, *spatial, shape[-1]), np.float32)

    def describe(tensor):
        out = list(tensor.shape)
        return {"stride": int(spatial[0] // out[1]), "channels": int(out[-1])}

    result = {"features": describe(encoder(x, training=False)), "skips": {}}
    skips = skips_model_of(encoder)
    if skips is not None:
        outputs = skips(x, training=False)
        for name in sorted(outputs):
            if name != "features":
                result["skips"][name] = describe(outputs[name])
    return result


def input_description(encoder, data=None):
    """The `input` section: what to feed the encoder.

    Args:
        encoder: the encoder (`min_input_size` and `divisible_by`, read when present).
        data: dict with any of `modality`, `channel_names`, `spacing`,
            `normalization`, `source` (from the recipe or the prepared manifest).
    """
    data = dict(data or {})
    shape = list(encoder.inputs[0].shape[1:])
    dim = len(shape) - 1
    channels = int(shape[-1])
    min_size = int(getattr(encoder, "min_input_size", 1))
    # Every PyramidEncoder states its alignment; another model is taken at its minimum size.
    divisible_by = getattr(encoder, "divisible_by", min_size)
    return {
        "dtype": "float32",
        "shape": [None, *shape],
        "dim": dim,
        "channels": channels,
        "channel_names": data.get("channel_names") or [f"channel_{i}" for i in range(channels)],
        "axis_order": AXIS_ORDER[dim] if dim in AXIS_ORDER else f"{dim}-d channels-last",
        "orientation": "RAS" if dim == 3 else "image",
        "modality": data.get("modality", "unknown"),
        "spacing": data.get("spacing"),
        "normalization": data.get("normalization", "unknown"),
        "min_input_size": min_size,
        "divisible_by": int(divisible_by),
        "source": data.get("source"),
    }


def describe_pretraining(task=None, config=None, summary=None):
    """The `pretraining` section: task name and full recipe, steps, final proxy metrics."""
    section = {"task": None, "task_config": None, "run_config": None, "steps": None,
               "final_metrics": None}
    if task is not None:
        section["task"] = getattr(task, "task_name", type(task).__name__)
        task_config = dict(task.get_config())
        # The encoder is described by the preset itself; Keras' auto-generated
        # name would make two exports of one checkpoint differ.
        for key in ("encoder", "name", "trainable"):
            task_config.pop(key, None)
        section["task_config"] = jsonable(task_config)
        permutations = getattr(task, "permutations", None)
        if permutations is not None:
            section["jigsaw_permutations"] = jsonable(np.asarray(permutations))
    if config is not None:
        from ssl3d_keras.config import to_dict

        section["run_config"] = to_dict(config) if not isinstance(config, dict) else config
    if summary:
        section["steps"] = summary.get("steps")
        section["final_metrics"] = {k: v for k, v in summary.items()
                                    if k.startswith(("final_", "chance_"))
                                    or k in ("loss", "accuracy")}
    return section


def build_metadata(encoder, *, task=None, config=None, summary=None, data=None, files=None):
    """The full metadata dict of an export.

    Args:
        encoder: the encoder `keras.Model`.
        task: the `ProxyTask` it was pretrained in, if any.
        config: its `PretrainConfig` (or dict), if any.
        summary: the run's `summary.json` dict, if any.
        data: input facts (see `input_description`).
        files: `{file name: sha256}` of the other files of the export.
    """
    return jsonable({
        "format": FORMAT,
        "encoder": {
            "class_name": type(encoder).__name__,
            "name": encoder.name,
            "parameter_count": int(encoder.count_params()),
        },
        "input": input_description(encoder, data),
        "outputs": output_shapes(encoder),
        "pretraining": describe_pretraining(task, config, summary),
        "versions": package_versions(),
        "files": dict(sorted((files or {}).items())),
    })


def dumps(metadata):
    """Canonical JSON text of `metadata` (sorted keys, fixed indentation)."""
    return json.dumps(metadata, indent=2, sort_keys=True) + "\n"
