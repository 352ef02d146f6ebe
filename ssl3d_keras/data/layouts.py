"""The dataset layouts found on disk: `discover` reads a folder into a `DatasetSource`.

Layouts (`discover(path, layout=...)`):

- `"folder"`: every `.nii`/`.nii.gz` under `path` (recursively) is one
  unlabelled case; its id is the path relative to `path` without the suffix.
- `"decathlon"`: Medical Segmentation Decathlon: `dataset.json` with
  `"modality"` (channel names), `"labels"` and a `"training"` list of
  `{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}`; images
  are 4D when there are several modalities (4th axis = channels). With
  `unlabelled=True` the unlabelled cases of `"test"` (`./imagesTs/x.nii.gz`;
  the `imagesTs` folder when the key is missing) are added, for pretraining.
- `"brats"`: one folder per case holding `<case>_t1`, `_t1ce`, `_t2`, `_flair`
  and `_seg` files (`.nii` or `.nii.gz`; `-` also accepted as separator). The
  channel order is `modalities` (default t1, t1ce, t2, flair) and is recorded
  in `channel_names`. Label 4 (enhancing tumour) is remapped to 3.
- `"csv"`: a manifest with a column `image` (one file, or several channel
  files separated by `;`, in channel order), optional `label`, `case_id` and
  `grade`. Relative paths are relative to the CSV's folder.
- `"images2d"`: PNG/JPEG photographs, either every image in a folder, or a CSV
  of `id_code[,diagnosis]` (the APTOS diabetic-retinopathy layout) whose images
  `<id_code>.png|.jpg|.jpeg` sit next to the CSV or one folder below it. The
  grade becomes `Case.grade`. Images are `(H, W, C)`, C = 3 (RGB) unless the
  first image of the dataset is greyscale, then C = 1.
- `"dicom"`: DICOM series, one series (SeriesInstanceUID) per case, read
  with pydicom (`ssl3d_keras.data.dicom`). A folder holding one series is
  named after the folder (`PT01/CT_ABDOMEN`); a folder mixing several series
  gives one case per series, named
  `<folder>/<PatientID>_s<SeriesNumber>_<SeriesDescription>` (sanitised to
  `A-Z a-z 0-9 . _ -`). Files named `*.dcm`, `*.dicom`, `*.ima`, without a
  suffix or with a numeric one (UID names) are read; other files and
  `DICOMDIR` are ignored. Single channel, no labels.
- `"slices"`: the 2D slices of any 3D layout along `slice_axis` of the
  canonical RAS volume (the paper's 2D-slice baseline). The id of slice 40
  along axis 2 of `case_012` is `"case_012/z040"`.

`"auto"` picks: `dataset.json` -> decathlon; sub-folders with `<folder>_seg`
or `<folder>_flair` files -> brats (checked before CSVs because BraTS ships
CSV side tables); a `.csv` with an `image` column -> csv, with `id_code` ->
images2d; files with the DICOM preamble and no NIfTI files -> dicom; PNG/JPEG
files -> images2d; NIfTI files -> folder.

Example:

>>> from ssl3d_keras.data.layouts import discover
>>> from ssl3d_keras.data.sources import split_cases
>>> source = discover("Task07_Pancreas")                     # doctest: +SKIP
>>> train, val = split_cases(source.cases, (0.8, 0.2), seed=0)  # doctest: +SKIP
>>> case = source.load(train[0])                              # doctest: +SKIP
>>> case.image.shape  # (D, H, W, C)                           # doctest: +SKIP
"""

import csv
import json
import os
from pathlib import Path

from ssl3d_keras.config import closest
from ssl3d_keras.data import dicom, nifti
from ssl3d_keras.data.sources import (
    Case,
    DicomSource,
    Images2DSource,
    SliceSource,
    VolumeSource,
    slice_case_id,
)
from ssl3d_keras.errors import ConfigError, DataError

__all__ = ["BRATS_LABELS", "BRATS_MODALITIES", "IMAGE_SUFFIXES", "LAYOUTS", "NIFTI_SUFFIXES",
           "detect_layout", "discover"]

LAYOUTS = ("folder", "decathlon", "brats", "csv", "images2d", "dicom", "slices")
BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")
BRATS_LABELS = {0: "background", 1: "necrotic and non-enhancing tumour core",
                2: "peritumoral edema", 3: "enhancing tumour"}
NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def discover(path, *, layout="auto", modalities=None, slice_axis=None, four_d="channels",
             unlabelled=False):
    """Find the cases of a dataset on disk.

    Args:
        path: a folder, a `dataset.json`, or a `.csv` file.
        layout: `"auto"` or one of `LAYOUTS`.
        modalities: BraTS channel order, a sequence of file suffixes
            (default `("t1", "t1ce", "t2", "flair")`).
        slice_axis: 0, 1 or 2 to cut the volumes into 2D slices along that
            canonical axis (implied 0 with `layout="slices"`).
        four_d: meaning of the 4th axis of NIfTI files: `"channels"`, or
            `"time"` (folder layout: every time frame becomes a case `<id>/t007`).
        unlabelled: decathlon layout: add the unlabelled `imagesTs` cases
            (no label) to the training cases, for pretraining.

    Returns:
        A `DatasetSource`.

    Raises:
        DataError: the path is missing, the layout is not recognised, a
            layout file is malformed, the dataset has no case, or an
            `imagesTs` id is also an `imagesTr` id.
        ConfigError: an unknown layout, modality list or slice axis, or
            `unlabelled` on a layout other than decathlon.
    """
    if not Path(path).exists():
        raise DataError(path, "dataset path not found")
    root = Path(path).resolve()  # case files are recorded with absolute paths
    if layout != "auto" and layout not in LAYOUTS:
        raise ConfigError("layout", f"unknown layout{closest(layout, LAYOUTS)}; known: "
                          f"auto, {', '.join(LAYOUTS)}. Received: {layout!r}")
    if layout == "slices":
        slice_axis = 0 if slice_axis is None else slice_axis
        layout = "auto"
    if slice_axis is not None and slice_axis not in (0, 1, 2):
        raise ConfigError("slice_axis", f"must be 0, 1 or 2. Received: {slice_axis!r}")
    if layout == "auto":
        layout = detect_layout(root)
    builders = {"folder": _folder, "decathlon": _decathlon, "brats": _brats, "csv": _csv,
                "images2d": _images2d, "dicom": _dicom}
    if modalities is not None and layout != "brats":
        raise ConfigError("modalities", f"only applies to the brats layout. Received layout "
                          f"{layout!r} with modalities={modalities!r}")
    if four_d not in ("channels", "time"):
        raise ConfigError("four_d", f"must be 'channels' or 'time'. Received: {four_d!r}")
    if four_d == "time" and layout != "folder":
        raise ConfigError("four_d", f"'time' (one case per time frame) applies to the folder "
                          f"layout only. Received layout {layout!r}")
    kwargs = {"modalities": modalities} if layout == "brats" else {}
    if layout == "folder":
        kwargs["four_d"] = four_d
    if unlabelled:
        if layout != "decathlon":
            raise ConfigError("unlabelled", f"adds the imagesTs cases of a decathlon dataset; "
                              f"other layouts list every case already. Received layout "
                              f"{layout!r}")
        kwargs["unlabelled"] = True
    source = builders[layout](root, **kwargs)
    if not source.cases:
        raise DataError(root, f"the {layout} dataset has no case")
    if slice_axis is not None:
        if source.dim != 3:
            raise ConfigError("slice_axis", f"slices need a 3D dataset. Received the 2D "
                              f"{layout} layout")
        source = _slices(source, slice_axis)
    return source


def detect_layout(root):
    """The layout name of a dataset path (see the module docstring)."""
    root = Path(root)
    if root.is_file():
        if root.name == "dataset.json":
            return "decathlon"
        if root.suffix.lower() == ".csv":
            return _csv_kind(root)
        raise DataError(root, "is a file but not a dataset.json or a .csv manifest")
    if (root / "dataset.json").is_file():
        return "decathlon"
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    for sub in subdirs:
        # BraTS names files after their case folder: <case>/<case>_seg.nii.gz.
        found = [_modality_file(sub, m) for m in ("seg", "flair")]
        if any(f is not None and f.name.startswith(sub.name) for f in found):
            return "brats"
    csvs = sorted(root.glob("*.csv"))
    if csvs:
        if len(csvs) > 1:
            raise DataError(root, f"holds several CSV files; pass the one to use. Received "
                            f"{[p.name for p in csvs]}")
        return _csv_kind(csvs[0])
    files = [p for p in root.rglob("*") if p.is_file()]
    if (not any(p.name.lower().endswith(NIFTI_SUFFIXES) for p in files)
            and any(dicom.is_dicom_candidate(p) and dicom.has_dicom_preamble(p) for p in files)):
        return "dicom"
    if any(p.name.lower().endswith(IMAGE_SUFFIXES) for p in files):
        return "images2d"
    if any(p.name.lower().endswith(NIFTI_SUFFIXES) for p in files):
        return "folder"
    raise DataError(root, "unknown dataset layout: no dataset.json, BraTS case folders, CSV, "
                    "DICOM, PNG/JPEG or NIfTI files found")


def _strip_suffix(name):
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES + IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _nifti_files(root):
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES)
                  and not p.name.startswith("."))


def _folder(root, *, four_d="channels"):
    if root.is_file():
        raise DataError(root, "the folder layout needs a folder of NIfTI files")
    cases, frames = [], {}
    channels = None
    for p in _nifti_files(root):
        case_id = _strip_suffix(p.relative_to(root).as_posix())
        if four_d == "time":
            _, n_frames = nifti.read_header_shape(p)
            width = max(3, len(str(n_frames - 1)))
            for t in range(n_frames):
                cid = f"{case_id}/t{t:0{width}d}"
                cases.append(Case(cid, (str(p),)))
                frames[cid] = t
        else:
            cases.append(Case(case_id, (str(p),)))
    if cases and four_d != "time":
        channels = _channels_of_first_readable(cases)
    names = ("image",) if not channels or channels == 1 else tuple(
        f"channel_{i}" for i in range(channels))
    return VolumeSource("folder", root, cases, names, None, four_d=four_d, frames=frames)


def _channels_of_first_readable(cases):
    """Channel count from the header of the first case (by id) that reads.

    A bad first file must not stop discovery: with `on_error="skip"` it is
    skipped and reported when loaded. Only when no header reads is its error raised.
    """
    first_error = None
    for case in sorted(cases, key=lambda c: c.case_id):
        try:
            return nifti.read_header_shape(case.images[0])[1]
        except DataError as e:
            first_error = first_error or e
    raise first_error


def _decathlon(root, *, unlabelled=False):
    json_path = root if root.is_file() else root / "dataset.json"
    root = json_path.parent
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(json_path, f"does not parse as JSON ({e})") from None
    for key in ("modality", "labels", "training"):
        if key not in meta:
            raise DataError(json_path, f"has no '{key}' key. Received keys {sorted(meta)}")
    try:
        channel_names = tuple(str(meta["modality"][k])
                              for k in sorted(meta["modality"], key=int))
        label_names = {int(k): str(v) for k, v in meta["labels"].items()}
    except (TypeError, ValueError, AttributeError) as e:
        raise DataError(json_path, f"'modality' and 'labels' must map integer keys to "
                        f"names ({e})") from None
    cases = []
    for i, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(json_path, f"training entry {i} has no 'image'. Received {entry!r}")
        image = (root / entry["image"]).resolve()
        label = entry.get("label")
        cases.append(Case(_strip_suffix(image.name), (str(image),),
                          str((root / label).resolve()) if label else None))
    if unlabelled:
        cases += _decathlon_test_cases(json_path, meta, cases)
    return VolumeSource("decathlon", root, cases, channel_names, label_names)


def _decathlon_test_cases(json_path, meta, training):
    """The unlabelled cases: `"test"` of dataset.json, else the files in `imagesTs`."""
    root = json_path.parent
    if "test" in meta:
        entries = meta["test"]
        if not isinstance(entries, list):
            raise DataError(json_path, f"'test' must be a list. Received {type(entries).__name__}")
        paths = []
        for i, entry in enumerate(entries):
            image = entry.get("image") if isinstance(entry, dict) else entry
            if not isinstance(image, str):
                raise DataError(json_path, f"test entry {i} is not an image path. "
                                f"Received {entry!r}")
            paths.append((root / image).resolve())
    else:
        folder = root / "imagesTs"
        paths = _nifti_files(folder) if folder.is_dir() else []
    if not paths:
        raise DataError(json_path, "has no unlabelled cases to add: 'test' is empty and there "
                        "is no imagesTs folder. Received unlabelled=True")
    known = {c.case_id: c.images[0] for c in training}
    cases = []
    for path in paths:
        case_id = _strip_suffix(path.name)
        if case_id in known:
            raise DataError(json_path, f"the unlabelled case {path} has the id {case_id!r} of "
                            f"the case {known[case_id]}; rename one of them")
        known[case_id] = str(path)
        cases.append(Case(case_id, (str(path),)))
    return cases


def _modality_file(folder, modality):
    """The file of `modality` in a BraTS case folder, or None."""
    for p in sorted(folder.iterdir()):
        stem = _strip_suffix(p.name)
        if (p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES)
                and stem.lower().endswith((f"_{modality}", f"-{modality}"))):
            return p
    return None


def _brats(root, *, modalities=None):
    if root.is_file():
        raise DataError(root, "the brats layout needs a folder of case folders")
    modalities = tuple(BRATS_MODALITIES if modalities is None else modalities)
    if not modalities or len(set(modalities)) != len(modalities) or "seg" in modalities:
        raise ConfigError("modalities", f"must be distinct modality names (not 'seg'). "
                          f"Received: {modalities!r}")
    cases, missing = [], {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        images = []
        for index, modality in enumerate(modalities):
            found = _modality_file(folder, modality)
            if found is None:
                missing.setdefault(folder.name, {})[index] = (
                    f"modality '{modality}': no file ending _{modality}.nii or "
                    f"_{modality}.nii.gz in {folder}")
                found = folder / f"{folder.name}_{modality}.nii.gz"
            images.append(str(found))
        seg = _modality_file(folder, "seg")
        cases.append(Case(folder.name, tuple(images), str(seg) if seg else None))
    labelled = any(c.label for c in cases)
    return VolumeSource("brats", root, cases, modalities, BRATS_LABELS if labelled else None,
                        label_remap={4: 3}, missing=missing)


def _read_csv(path):
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = [c.strip() for c in (reader.fieldnames or [])]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(path, f"cannot be read as CSV ({e})") from None
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in rows]
    return columns, rows


def _csv_kind(path):
    columns, _ = _read_csv(path)
    if "image" in columns:
        return "csv"
    if "id_code" in columns:
        return "images2d"
    raise DataError(path, f"a CSV manifest needs an 'image' column (volumes) or 'id_code' "
                    f"(photographs). Received columns {columns}")


def _parse_grade(path, row_number, value):
    try:
        return int(value)
    except ValueError:
        raise DataError(path, f"row {row_number}: grade must be an integer. "
                        f"Received {value!r}") from None


def _csv(root):
    path = root if root.is_file() else _single_csv(root)
    columns, rows = _read_csv(path)
    if "image" not in columns:
        raise DataError(path, f"has no 'image' column. Received columns {columns}")
    folder = path.parent
    cases = []
    for n, row in enumerate(rows, start=2):
        files = [f.strip() for f in row["image"].split(";") if f.strip()]
        if not files:
            raise DataError(path, f"row {n}: empty 'image'")
        images = tuple(str((folder / f).resolve()) for f in files)
        label = row.get("label") or None
        case_id = row.get("case_id") or row.get("id") or _strip_suffix(Path(files[0]).name)
        grade = row.get("grade") or None
        cases.append(Case(case_id, images, str((folder / label).resolve()) if label else None,
                          _parse_grade(path, n, grade) if grade is not None else None))
    counts = {len(c.images) for c in cases}
    if len(counts) > 1:
        raise DataError(path, f"rows list different numbers of channel files: {sorted(counts)}")
    n_files = counts.pop() if counts else 1
    if n_files > 1:
        names = tuple(f"channel_{i}" for i in range(n_files))
    else:
        channels = _channels_of_first_readable(cases) if cases else 1
        names = ("image",) if channels == 1 else tuple(f"channel_{i}" for i in range(channels))
    return VolumeSource("csv", folder, cases, names, None)


def _single_csv(root):
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) != 1:
        raise DataError(root, f"expected exactly one CSV file. Received {len(csvs)}")
    return csvs[0]


def _images2d(root):
    from PIL import Image, UnidentifiedImageError

    if root.is_file() or list(root.glob("*.csv")):
        path = root if root.is_file() else _single_csv(root)
        columns, rows = _read_csv(path)
        if "id_code" not in columns:
            raise DataError(path, f"has no 'id_code' column. Received columns {columns}")
        index = {}
        for folder in (path.parent, *sorted(p for p in path.parent.iterdir() if p.is_dir())):
            for p in sorted(folder.iterdir()):
                if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES):
                    index.setdefault(_strip_suffix(p.name), p)
        cases = []
        for n, row in enumerate(rows, start=2):
            found = index.get(row["id_code"], path.parent / f"{row['id_code']}.png")
            grade = row.get("diagnosis") or None  # absent in an unlabelled test.csv
            cases.append(Case(row["id_code"], (str(found),), None,
                              None if grade is None else _parse_grade(path, n, grade)))
    else:
        cases = [Case(_strip_suffix(p.relative_to(root).as_posix()), (str(p),))
                 for p in sorted(root.rglob("*"))
                 if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)]
    names = ("red", "green", "blue")
    first = next((c for c in sorted(cases, key=lambda c: c.case_id)
                  if os.path.isfile(c.images[0])), None)
    if first is not None:
        try:
            with Image.open(first.images[0]) as im:
                if im.mode in ("1", "L", "I", "I;16", "F", "LA"):
                    names = ("gray",)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(first.images[0], f"is not a readable image ({e})") from None
    return Images2DSource(root, cases, names)


def _dicom(root):
    if root.is_file():
        raise DataError(root, "the dicom layout needs a folder of DICOM series")
    return DicomSource(root, [Case(cid, files) for cid, files in dicom.find_series(root)])


def _slices(source, axis):
    cases, parents = [], {}
    for case in source.cases:
        try:
            shape = (dicom.read_series_shape(case.images) if source.layout == "dicom"
                     else nifti.read_header_shape(case.images[0])[0])
        except DataError:
            # An unreadable volume still gets a case, so it shows up as skipped, not vanished.
            shape = (1, 1, 1)
        n = shape[axis]
        for index in range(n):
            cid = slice_case_id(case.case_id, axis, index, n)
            cases.append(Case(cid, case.images, case.label, case.grade))
            parents[cid] = (case, index)
    return SliceSource(source, axis, cases, parents)
