"""`zoo verify`: prepare a few cases with a recipe's preprocessing and check them against its card.

Days of pretraining are lost when the prepared volumes are not what the recipe
describes: a CT whose air is not -1000 HU (the foreground crop keeps the
whole field of view), volumes that are mostly zero padding (zero slabs along
one axis give the rotation task away), a folder with the wrong number of
channels. `verify_recipe` prepares a sample of `cases` cases exactly as a
build would (`ssl3d_keras.data.prepare_dataset` with the recipe's
`[pretrain.data]` preprocessing and layout) into a temporary folder and
checks, per case:

- the spatial shape equals the recipe's `resize` (or `shape`);
- the channel count equals the card's `channel_names`;
- the padding share (voxels outside the bounding box of the foreground) is
  at most the recipe's `max_padding_share` (default 0.5);
- the intensities after normalisation are finite, not constant, and in the
  range the normalisation promises (`[0, 1]` for `"ct"` and `"minmax"`,
  within +-100 for z-scores); a CT has air at the window's low end;
- every example the task reads (a volume, or a slice of it for a 2D recipe
  on 3D data) is at least the task's crop `input_size` on every axis.

Example:

>>> from ssl3d_keras.zoo.verify import verify_recipe
>>> report = verify_recipe("pancreas-ct-rotation", "Task07_Pancreas")  # doctest: +SKIP
>>> print(report.table())                                             # doctest: +SKIP
>>> report.ok                                                         # doctest: +SKIP
True
"""

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ssl3d_keras.config import from_dict
from ssl3d_keras.errors import ConfigError, DataError
from ssl3d_keras.zoo.recipes import Recipe, get_recipe, load_recipe

__all__ = ["CaseCheck", "VerifyReport", "expectations", "padding_share", "sample_dataset",
           "verify_recipe"]

DEFAULT_MAX_PADDING_SHARE = 0.5
# A z-score beyond this many standard deviations means broken statistics (a constant
# background taken as the foreground, an integer overflow), not anatomy.
ZSCORE_LIMIT = 100.0
# A CT cropped to the body still has air in the corners of its box: air (-1000 HU) sits at
# the low end of the window after "ct" normalisation.
CT_AIR_LEVEL = 0.05
_UNIT_RANGE = ("ct", "minmax")
_TOLERANCE = 1e-4


@dataclasses.dataclass
class CaseCheck:
    """What `verify_recipe` found for one prepared case.

    Args:
        case_id: the case id.
        shape: spatial shape of the prepared volume (or image).
        channels: number of channels.
        padding_share: share of voxels outside the foreground's bounding box.
        minimum: smallest value after normalisation.
        maximum: largest value after normalisation.
        problems: one line per failed check (empty: the case passes).
    """

    case_id: str
    shape: tuple
    channels: int
    padding_share: float
    minimum: float
    maximum: float
    problems: list = dataclasses.field(default_factory=list)

    @property
    def ok(self):
        return not self.problems


@dataclasses.dataclass
class VerifyReport:
    """The outcome of `verify_recipe`.

    Args:
        recipe: the recipe's name.
        data: the dataset folder checked.
        expected: what the card promises (`shape`, `channels`, `channel_names`,
            `max_padding_share`, `input_size`, `normalize`, `dim`, `slice_axis`).
        cases: one `CaseCheck` per prepared case.
        problems: failures that belong to no prepared case (a case that could
            not be prepared).
    """

    recipe: str
    data: str
    expected: dict
    cases: list
    problems: list = dataclasses.field(default_factory=list)

    @property
    def ok(self):
        return not self.failures()

    def failures(self):
        """One line per failed check: `"<case>: <what is wrong>"`."""
        lines = list(self.problems)
        for case in self.cases:
            lines += [f"{case.case_id}: {problem}" for problem in case.problems]
        return lines

    def table(self):
        """The per-case table `ssl3d zoo verify` prints."""
        e = self.expected
        want = "x".join(map(str, e["shape"])) if e["shape"] else f">= {e['input_size']} per axis"
        rows = [("case", "shape", "channels", "padding", "min", "max", "verdict")]
        for c in self.cases:
            rows.append((c.case_id, "x".join(map(str, c.shape)), str(c.channels),
                         f"{c.padding_share:.3f}", f"{c.minimum:.4g}", f"{c.maximum:.4g}",
                         "ok" if c.ok else "FAIL"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"recipe {self.recipe} on {self.data}: expects shape {want}, "
                 f"{e['channels']} channel(s) {e['channel_names']}, padding <= "
                 f"{e['max_padding_share']}, normalisation {e['normalize']!r}"]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                  for r in rows]
        return "\n".join(lines)


def expectations(recipe):
    """What a recipe's card promises about its prepared data.

    Args:
        recipe: a `Recipe`.

    Returns:
        dict with `shape` (tuple or None: the volumes keep their own shape),
        `channels`, `channel_names`, `max_padding_share`, `input_size`,
        `normalize`, `dim`, `slice_axis`, `layout` and `preprocess` (the
        recipe's `PreprocessConfig`).
    """
    from ssl3d_keras.data.preprocess import PreprocessConfig

    data = recipe.pretrain.get("data", {})
    preprocess = from_dict(PreprocessConfig, data.get("preprocess", {}),
                           f"zoo/{recipe.name}.toml:pretrain.data.preprocess")
    shape = getattr(preprocess, "resize", None) or preprocess.shape
    limit = getattr(preprocess, "max_padding_share", None)
    return {
        "shape": tuple(shape) if shape else None,
        "channels": len(recipe.data.channel_names),
        "channel_names": list(recipe.data.channel_names),
        "max_padding_share": DEFAULT_MAX_PADDING_SHARE if limit is None else float(limit),
        "input_size": data.get("input_size"),
        "normalize": preprocess.normalize,
        "dim": int(data.get("dim", 3)),
        "slice_axis": int(data.get("slice_axis", 0)),
        "layout": data.get("layout", "auto"),
        "preprocess": preprocess,
    }


def verify_recipe(recipe, data, *, cases=3, work_dir=None, progress=False):
    """Prepare `cases` cases of `data` with `recipe`'s preprocessing and check them.

    Args:
        recipe: a zoo name, a path to a recipe TOML file, or a `Recipe`.
        data: the raw dataset folder (or file) the recipe's `--data` takes.
        cases: number of cases to prepare, spread evenly over the dataset's
            cases in id order (all of them when it has fewer). Default 3.
        work_dir: folder for the sample and its prepared shards; default a
            temporary folder, removed afterwards.
        progress: show prepare's progress bar.

    Returns:
        A `VerifyReport`; `report.ok` is False when any check failed and
        `report.failures()` says why, one line per check.

    Raises:
        ConfigError: unknown recipe, `cases` < 1, or a recipe without data.
        DataError: the dataset is not found or has no case.
    """
    recipe = _as_recipe(recipe)
    if int(cases) < 1:
        raise ConfigError("cases", f"must be >= 1. Received: {cases}")
    expected = expectations(recipe)
    if work_dir is not None:
        return _verify_in(recipe, data, int(cases), Path(work_dir), expected, progress)
    with tempfile.TemporaryDirectory(prefix="ssl3d-verify-") as tmp:
        return _verify_in(recipe, data, int(cases), Path(tmp), expected, progress)


def _as_recipe(recipe):
    if isinstance(recipe, Recipe):
        return recipe
    text = os.fspath(recipe)
    if text.endswith(".toml"):
        return load_recipe(text)
    return get_recipe(text)


def _verify_in(recipe, data, n, work, expected, progress):
    from ssl3d_keras.data.prepare import prepare_dataset

    sample = sample_dataset(data, work / "sample", n, layout=expected["layout"])
    manifest = prepare_dataset(sample, work / "prepared", preprocess=expected["preprocess"],
                               layout=expected["layout"], on_error="skip", progress=progress)
    problems = [f"{s['id']}: could not be prepared: {s['reason']}" for s in manifest.skipped]
    entries = {c["id"]: c for c in manifest.cases}
    checks = []
    for case_id, image in _prepared_images(work / "prepared"):
        checks.append(_check_case(case_id, image, entries[case_id], expected))
    return VerifyReport(recipe=recipe.name, data=str(data), expected=_printable(expected),
                        cases=checks, problems=problems)


def _printable(expected):
    return {k: v for k, v in expected.items() if k != "preprocess"}


def _prepared_images(folder):
    """`(case_id, image)` of every prepared case, in the manifest's order."""
    from ssl3d_keras.data.volumes import shard_volumes

    for item in shard_volumes(folder).as_numpy_iterator():
        yield item["case_id"].decode(), item["image"]


def _check_case(case_id, image, entry, expected):
    spatial, channels = tuple(image.shape[:-1]), int(image.shape[-1])
    finite = bool(np.isfinite(image).all())
    lo, hi = (float(np.nanmin(image)), float(np.nanmax(image))) if image.size else (0.0, 0.0)
    share = entry.get("padding_share")
    if share is None:
        share = padding_share(image, _foreground_level(expected["preprocess"], entry))
    problems = []
    if expected["shape"] and spatial != tuple(expected["shape"]):
        problems.append(f"shape {_fmt(spatial)}, the recipe resizes to "
                        f"{_fmt(expected['shape'])}")
    if channels != expected["channels"]:
        problems.append(f"{channels} channel(s), the card says {expected['channels']} "
                        f"({', '.join(expected['channel_names'])})")
    if share > expected["max_padding_share"]:
        problems.append(f"padding share {share:.2f} is above the recipe's limit "
                        f"{expected['max_padding_share']} (mostly background or zero padding: "
                        f"check the foreground crop and its threshold)")
    problems += _intensity_problems(finite, lo, hi, expected["normalize"])
    small = _too_small(spatial, expected)
    if small:
        problems.append(small)
    return CaseCheck(case_id, spatial, channels, float(share), lo, hi, problems)


def _fmt(shape):
    return "x".join(str(int(s)) for s in shape)


def _intensity_problems(finite, lo, hi, normalize):
    if not finite:
        return ["values are not finite (NaN or inf) after normalisation"]
    if not hi > lo:
        return [f"the image is constant ({lo:.4g}) after normalisation"]
    if normalize in _UNIT_RANGE and (lo < -_TOLERANCE or hi > 1 + _TOLERANCE):
        return [f"values [{lo:.4g}, {hi:.4g}] leave [0, 1], the range of {normalize!r} "
                f"normalisation"]
    if normalize == "ct" and lo > CT_AIR_LEVEL:
        return [f"no voxel near the CT window's low end (min {lo:.4g}): is air at -1000 HU? "
                f"(a scan stored without its rescale intercept keeps air near 0, and the "
                f"foreground crop and window then do nothing useful)"]
    if normalize in ("zscore", "percentile") and max(abs(lo), abs(hi)) > ZSCORE_LIMIT:
        return [f"z-scores [{lo:.4g}, {hi:.4g}] reach beyond +-{ZSCORE_LIMIT:g} (broken "
                f"statistics: mostly constant voxels?)"]
    return []


def _too_small(spatial, expected):
    """Why the task's crop would have to zero-pad this example, or None."""
    size = expected["input_size"]
    if size is None:
        return None
    example = list(spatial)
    if expected["dim"] == 2 and len(example) == 3:
        del example[expected["slice_axis"]]
    if min(example) < size:
        what = "a slice" if len(example) < len(spatial) else "the volume"
        return (f"{what} {_fmt(example)} is smaller than the task's crop {size} per axis "
                f"(the crop would be zero-padded)")
    return None


def _foreground_level(preprocess, entry):
    """The foreground threshold in normalised units for this case, or None (`!= 0`).

    With a `foreground_threshold` (e.g. -500 HU), the threshold is carried
    through the case's own normalisation (its statistics are in the
    manifest), so CT air just above -1000 HU counts as background.
    """
    threshold = preprocess.foreground_threshold
    if threshold is None:
        return None
    levels = []
    for stats in entry.get("normalization") or [{}]:
        mode = preprocess.normalize
        if mode == "ct":
            low, high = preprocess.ct_window
            levels.append((min(max(threshold, low), high) - low) / (high - low))
        elif mode == "minmax" and stats.get("max", 0) > stats.get("min", 0):
            levels.append((threshold - stats["min"]) / (stats["max"] - stats["min"]))
        elif mode == "zscore" and stats.get("std"):
            levels.append((threshold - stats["mean"]) / stats["std"])
        elif mode == "none":
            levels.append(threshold)
        else:
            return None
    return levels


def padding_share(image, level=None):
    """Share of the voxels outside the bounding box of the foreground.

    Args:
        image: `(*spatial, C)` array.
        level: None (foreground is `!= 0` in any channel: zero padding and a
            zeroed background are background), or one threshold per channel
            (foreground is `> level`).

    Returns:
        float in [0, 1]; 1.0 when nothing is foreground.

    Example:

    >>> import numpy as np
    >>> volume = np.zeros((4, 4, 4, 1)); volume[:2] = 1.0
    >>> padding_share(volume)
    0.5
    """
    image = np.asarray(image)
    if level is None:
        mask = (image != 0).any(axis=-1)
    else:
        mask = (image > np.asarray(level, dtype=image.dtype)).any(axis=-1)
    if not mask.any():
        return 1.0
    box = 1
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box *= int(hits[-1]) - int(hits[0]) + 1
    return 1.0 - box / mask.size


def sample_dataset(src, out, n, *, layout="auto"):
    """A dataset folder of `n` cases of `src`, in the same layout, linking to its files.

    The cases are spread evenly over `src`'s cases in id order (the first,
    the last, and evenly in between), so a verify sees more than one corner of
    the dataset. Decathlon samples get their own `dataset.json` (so channel and
    label names are kept), CSV samples their own CSV; files are symlinked.

    Args:
        src: the dataset (as `discover` takes it).
        out: the folder to write (created; must not exist or be empty).
        n: number of cases.
        layout: the dataset's layout, `"auto"` to detect.

    Returns:
        `Path` of the sample folder.

    Raises:
        DataError: the dataset is not found or has no case.
    """
    from ssl3d_keras.data.layouts import discover

    source = discover(src, layout=layout)
    chosen = _spread(source.cases, n)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if source.layout == "decathlon":
        root = Path(src)
        json_path = root if root.is_file() else root / "dataset.json"
        meta = json.loads(json_path.read_text())
        meta["training"] = [{"image": c.images[0], **({"label": c.label} if c.label else {})}
                            for c in chosen]
        meta["numTraining"], meta["test"] = len(chosen), []
        (out / "dataset.json").write_text(json.dumps(meta, indent=1))
    elif source.layout == "csv":
        rows = ["case_id,image,label"] + [f"{c.case_id},{';'.join(c.images)},{c.label or ''}"
                                          for c in chosen]
        (out / "sample.csv").write_text("\n".join(rows) + "\n")
    elif source.layout == "brats":
        for c in chosen:
            (out / c.case_id).symlink_to(Path(c.images[0]).parent, target_is_directory=True)
    elif source.layout in ("folder", "images2d"):
        for c in chosen:
            file = Path(c.images[0])
            link = out / f"{c.case_id}{_suffix(file.name)}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(file.resolve())
    else:
        raise DataError(src, f"verify cannot sample the {source.layout!r} layout")
    return out


def _spread(cases, n):
    if n >= len(cases):
        return list(cases)
    if n == 1:
        return [cases[0]]
    picks = sorted({round(i * (len(cases) - 1) / (n - 1)) for i in range(n)})
    return [cases[i] for i in picks]


def _suffix(name):
    lower = name.lower()
    return ".nii.gz" if lower.endswith(".nii.gz") else Path(name).suffix
