"""The labelled dataset of a fine-tuning run: prepared once, read case by case.

Every fine-tuning run reads a prepared shard folder (`ssl3d prepare`), so
training, evaluation and predictions written back to the source grid all see
the same preprocessing, recorded in its manifest. Phantoms are written as a
Decathlon NIfTI dataset and prepared like any other, so the demonstration runs
the whole path a real dataset takes.
"""

import dataclasses
from pathlib import Path

import numpy as np

from ssl3d_keras.errors import ConfigError, DataError

__all__ = ["LabelledDataset", "resolve_dataset", "open_labelled"]


@dataclasses.dataclass
class LabelledDataset:
    """What a fine-tuning run needs to know about its prepared data.

    Attributes:
        folder: the prepared shard folder.
        manifest: its manifest (dict).
        cases: dict case id -> manifest case entry, for the labelled cases
            (segmentation) or the graded ones (classification).
        num_classes: classes including background (segmentation) or grades.
        class_names: dict int -> str.
        lookup: int32 array mapping stored label values to classes, or None.
        regions: "brats" or "none".
        channels: image channels.
        dim: spatial dimensions of the stored cases.
    """

    folder: Path
    manifest: dict
    cases: dict
    num_classes: int
    class_names: dict
    lookup: np.ndarray | None
    regions: str
    channels: int
    dim: int

    def spacing(self, case_id):
        """Voxel size (mm) of a prepared case."""
        return tuple(float(s) for s in self.cases[case_id]["spacing"])


def _prepare(source, target, data, progress):
    from ssl3d_keras.config import from_dict
    from ssl3d_keras.data.prepare import prepare_owned
    from ssl3d_keras.data.preprocess import PreprocessConfig

    preprocess = from_dict(PreprocessConfig, data.preprocess, "data.preprocess")
    prepare_owned(source, target, preprocess=preprocess, layout=data.layout, progress=progress)
    return target


def resolve_dataset(data, out_dir, *, progress=False):
    """Make sure the run's data is prepared; fills `data.prepared` and returns it.

    Args:
        data: a `FinetuneData`.
        out_dir: the run (or experiment) folder: phantoms go to
            `OUT/phantoms/`, a raw dataset is prepared into `OUT/prepared/`.
        progress: draw progress bars while preparing.

    Returns:
        `Path` of the prepared folder.
    """
    out_dir = Path(out_dir)
    if data.prepared is not None and (Path(data.prepared) / "manifest.json").is_file():
        return Path(data.prepared)
    if data.path is None:
        from ssl3d_keras.data.phantoms import write_phantom_dataset

        raw = out_dir / "phantoms"
        if not (raw / "dataset.json").is_file():
            p = data.phantoms
            write_phantom_dataset(raw, p.n, size=p.size, channels=p.channels, seed=p.seed)
        prepared = _prepare(raw, out_dir / "prepared", data, progress)
    else:
        source = Path(data.path)
        if not source.exists():
            raise DataError(source, "data path not found")
        if (source / "manifest.json").is_file():
            prepared = source
        else:
            prepared = _prepare(source, out_dir / "prepared", data, progress)
    data.prepared = str(Path(prepared).resolve())
    return Path(data.prepared)


def _declared_classes(data, manifest, folder):
    label_map = data.label_map
    if label_map is None and data.path is None:
        from ssl3d_keras.downstream.config import PHANTOM_LABEL_MAP

        label_map = PHANTOM_LABEL_MAP
    names = manifest.get("label_names") or {}
    if label_map:
        num = data.num_classes or max(int(v) for v in label_map.values()) + 1
        class_names = {0: "background"}
        source_names = {int(k): v for k, v in names.items()}
        for source, target in sorted(label_map.items(), key=lambda kv: int(kv[1])):
            class_names.setdefault(int(target), source_names.get(int(source), f"class {target}"))
    else:
        if data.num_classes is not None:
            num = int(data.num_classes)
        elif names:
            num = max(int(k) for k in names) + 1
        else:
            raise ConfigError("data.num_classes", f"{folder}: the dataset declares no label "
                              "classes (no 'labels' in dataset.json); set data.num_classes. "
                              "Received: None")
        class_names = ({int(k): v for k, v in names.items()}
                       or {i: f"class {i}" for i in range(num)})
    if data.class_names:
        class_names.update({int(k): v for k, v in data.class_names.items()})
    return num, class_names, label_map


def open_labelled(data, task="segmentation"):
    """Read a prepared folder's manifest and check it suits the task, before any training.

    Args:
        data: a `FinetuneData` whose `prepared` is set (see `resolve_dataset`).
        task: "segmentation" or "classification".

    Returns:
        A `LabelledDataset`.

    Raises:
        DataError: the dataset has no labels (segmentation) or no grades
            (classification), or a label map targets a class outside the range.
    """
    from ssl3d_keras.data.shards import read_manifest
    from ssl3d_keras.downstream.patches import label_lookup

    folder = Path(data.prepared)
    manifest = read_manifest(folder)
    entries = manifest.get("cases", [])
    dim = int(manifest["dim"])
    if task == "classification":
        cases = {c["id"]: c for c in entries if c.get("grade") is not None}
        if not cases:
            raise DataError(folder / "manifest.json", "no case has a grade; classification needs "
                            "a CSV with a grade (or diagnosis) column. Received "
                            f"{len(entries)} ungraded case(s)")
        grades = sorted({int(c["grade"]) for c in cases.values()})
        num = data.num_classes or grades[-1] + 1
        if grades[0] < 0 or grades[-1] >= num:
            raise DataError(folder / "manifest.json", f"grades must lie in [0, {num}). "
                            f"Received grades {grades}")
        names = {i: f"grade {i}" for i in range(num)}
        return LabelledDataset(folder, manifest, cases, int(num), names, None, "none",
                               int(manifest["channels"]), dim)

    cases = {c["id"]: c for c in entries if c.get("has_label")}
    if not cases:
        raise DataError(folder / "manifest.json", "the dataset has no label maps; fine-tuning a "
                        "segmentation needs labelsTr (Decathlon), _seg files (BraTS) or a "
                        f"label column (CSV). Received {len(entries)} unlabelled case(s)")
    if dim != 3:
        raise DataError(folder / "manifest.json", "segmentation fine-tuning needs 3D cases (a 2D "
                        f"model runs slice-wise on them with data.dim=2). Received {dim}D cases")
    num, class_names, label_map = _declared_classes(data, manifest, folder)
    if label_map:
        bad = {k: v for k, v in label_map.items() if not 0 <= int(v) < num}
        if bad:
            raise ConfigError("data.label_map", f"maps to classes outside [0, {num}). "
                              f"Received: {bad}")
    regions = data.regions
    if regions == "auto":
        regions = "brats" if manifest.get("layout") == "brats" else "none"
    return LabelledDataset(folder, manifest, cases, int(num), class_names,
                           label_lookup(label_map), regions, int(manifest["channels"]), dim)


def case_volumes(dataset, case_ids, *, deterministic=True):
    """The prepared volumes of `case_ids` (labels mapped to classes), in shard order.

    Args:
        dataset: a `LabelledDataset`.
        case_ids: the ids to keep.

    Returns:
        `tf.data.Dataset` of dicts `image` `(*spatial, C)`, `label` int32
        `(*spatial)` (classes), `case_id`; its cardinality is `len(case_ids)`.
    """
    import tensorflow as tf

    from ssl3d_keras.data.volumes import shard_volumes

    wanted = tf.constant(sorted(case_ids) or [""])
    lookup = None if dataset.lookup is None else tf.constant(dataset.lookup)

    def keep(volume):
        return tf.reduce_any(tf.equal(volume["case_id"], wanted))

    def to_classes(volume):
        if lookup is None:
            return volume
        label = tf.gather(lookup, tf.clip_by_value(volume["label"], 0, len(dataset.lookup) - 1))
        return {**volume, "label": label}

    volumes = shard_volumes(dataset.folder, deterministic=deterministic).filter(keep)
    volumes = volumes.map(to_classes, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return volumes.apply(tf.data.experimental.assert_cardinality(len(case_ids)))


def iterate_cases(dataset, case_ids):
    """Yield `(case_id, image, label)` numpy arrays one case at a time (memory stays flat)."""
    for volume in case_volumes(dataset, case_ids).as_numpy_iterator():
        yield volume["case_id"].decode(), volume["image"], volume["label"]


def check_label_values(dataset, case_ids):
    """Refuse stored label values outside the declared classes, naming the case.

    With a label map every stored value is either mapped or background, so only
    unmapped datasets are checked.

    Raises:
        DataError: a case holds a value >= `num_classes` or < 0.
    """
    if dataset.lookup is not None:
        return
    for case_id, _, label in iterate_cases(dataset, case_ids):
        low, high = int(label.min()), int(label.max())
        if low < 0 or high >= dataset.num_classes:
            sources = dataset.cases[case_id].get("sources", [case_id])
            raise DataError(sources[0] if sources else case_id,
                            f"label values must lie in [0, {dataset.num_classes}) (the declared "
                            f"classes). Received values from {low} to {high} in case {case_id}")
