"""The cases of a dataset: what a case is, how each kind of source loads one, splits.

`ssl3d_keras.data.layouts.discover(path)` reads a folder in one of the known
layouts (NIfTI folder, Decathlon, BraTS, CSV, DICOM series, 2D images, 2D
slices of any of them) into one of the sources defined here: a sorted list of `Case` and a
`load(case)` that returns a `LoadedCase`. `discover`, `detect_layout` and the
layout constants are still importable from this module.

Example:

>>> from ssl3d_keras.data.sources import Case, split_cases
>>> cases = [Case(f"case_{i}", (f"case_{i}.nii.gz",)) for i in range(10)]
>>> train, val = split_cases(cases, (0.8, 0.2), seed=0)
>>> len(train), len(val)
(8, 2)
"""

import dataclasses
import os

import numpy as np

from ssl3d_keras.data import dicom, nifti
from ssl3d_keras.errors import ConfigError, DataError

__all__ = ["Case", "DatasetSource", "DicomSource", "Images2DSource", "LoadedCase", "SliceSource", "VolumeSource", "slice_case_id", "split_cases"]

# Names that moved to `ssl3d_keras.data.layouts`, still importable from here.
_MOVED = ("BRATS_LABELS", "BRATS_MODALITIES", "IMAGE_SUFFIXES", "LAYOUTS", "NIFTI_SUFFIXES",
          "detect_layout", "discover")
_AXIS_LETTERS = "xyz"


@dataclasses.dataclass(frozen=True)
class Case:
    """One case of a dataset.

    Attributes:
        case_id: unique id, the sort key.
        images: one multi-channel file, or one file per channel in channel order.
        label: label map file, or None.
        grade: class of the whole image (e.g. a retinopathy grade), or None.
    """

    case_id: str
    images: tuple
    label: str | None = None
    grade: int | None = None


@dataclasses.dataclass
class LoadedCase:
    """A case in memory.

    Attributes:
        image: float32 `(D, H, W, C)` or `(H, W, C)`.
        label: int32 `(D, H, W)` / `(H, W)`, or None.
        affine: `(4, 4)` voxel-to-world matrix (identity for photographs).
        spacing: voxel size per spatial axis (mm; 1.0 for photographs).
        case_id: the case id.
        sources: the files read.
    """

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    spacing: tuple
    case_id: str
    sources: tuple


class DatasetSource:
    """The cases of one dataset and how to load them.

    Attributes:
        layout: one of `LAYOUTS`.
        root: the path given to `discover`.
        cases: list of `Case`, sorted by id.
        channel_names: tuple of channel names, in channel order.
        label_names: dict int -> name, or None when the dataset has no label maps.
        dim: 3 for volumes, 2 for photographs and slices.
    """

    def __init__(self, layout, root, cases, channel_names, label_names, dim):
        self.layout = layout
        self.root = str(root)
        self.cases = sorted(cases, key=lambda c: c.case_id)
        self.channel_names = tuple(channel_names)
        self.label_names = label_names
        self.dim = dim
        ids = [c.case_id for c in self.cases]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(root, f"two cases share the id {dup!r}")

    def load(self, case):
        """Load `case` (a `Case` of this source) into a `LoadedCase`."""
        raise NotImplementedError  # each layout's subclass reads its files

    def __len__(self):
        return len(self.cases)

    def __repr__(self):
        return (f"{type(self).__name__}(layout={self.layout!r}, root={self.root!r}, "
                f"cases={len(self.cases)}, channels={self.channel_names}, dim={self.dim})")


class VolumeSource(DatasetSource):
    """3D cases stored as NIfTI: folder, decathlon, brats and csv layouts.

    Args:
        four_d: meaning of a 4th axis, as in `load_nifti`.
        label_remap: dict old -> new label value applied after reading.
        frames: dict case id -> time frame to read (folder layout with
            `four_d="time"`: each frame is its own case).
        missing: dict case id -> {channel index: what is missing}, for
            messages about absent files.
    """

    def __init__(self, layout, root, cases, channel_names, label_names, *, four_d="channels",
                 label_remap=None, frames=None, missing=None):
        super().__init__(layout, root, cases, channel_names, label_names, dim=3)
        self.four_d = four_d
        self.label_remap = label_remap or {}
        self.frames = frames or {}
        self.missing = missing or {}

    def load(self, case):
        missing = self.missing.get(case.case_id)
        if missing:
            index, message = min(missing.items())
            raise DataError(case.case_id, f"missing {message} (channel {index})")
        for path in (*case.images, *([case.label] if case.label else [])):
            if not os.path.isfile(path):
                raise DataError(case.case_id, f"file not found: {path}")
        frame = self.frames.get(case.case_id)
        volumes = [nifti.load_nifti(p, four_d="time" if frame is not None else self.four_d,
                                    frame=frame) for p in case.images]
        first = volumes[0]
        for name, vol in zip(self.channel_names[1:], volumes[1:], strict=False):
            vol.array = nifti.match_grid(case.case_id, first.array.shape[:3], first.affine,
                                         vol.array, vol.affine, what=f"channel '{name}'")
        image = (first.array if len(volumes) == 1
                 else np.concatenate([v.array for v in volumes], axis=-1))
        if self.channel_names and image.shape[-1] != len(self.channel_names):
            raise DataError(case.case_id, f"has {image.shape[-1]} channels but the dataset "
                            f"declares {len(self.channel_names)} {self.channel_names}")
        label = None
        if case.label is not None:
            label, label_affine, _ = nifti.load_label(case.label)
            for old, new in self.label_remap.items():
                label[label == old] = new
            label = nifti.match_grid(case.case_id, image.shape[:3], first.affine, label,
                                     label_affine)
            if self.label_names is not None:
                nifti.check_label_values(f"{case.case_id} ({case.label})", label,
                                         self.label_names)
        sources = tuple(case.images) + ((case.label,) if case.label else ())
        return LoadedCase(image, label, first.affine, first.spacing, case.case_id, sources)


class DicomSource(DatasetSource):
    """3D cases stored as DICOM series (layout `"dicom"`): one series per case.

    `Case.images` holds every file of the series; `load` reads them with
    `ssl3d_keras.data.dicom.load_series` (sorted along the slice normal,
    rescaled, canonical RAS). Single channel `("image",)`, no labels.
    """

    def __init__(self, root, cases):
        super().__init__("dicom", root, cases, ("image",), None, dim=3)

    def load(self, case):
        vol = dicom.load_series(case.images)
        return LoadedCase(vol.array, None, vol.affine, vol.spacing, case.case_id,
                          tuple(case.images))


class Images2DSource(DatasetSource):
    """2D photographs (PNG/JPEG) read with PIL as `(H, W, C)` float32 in [0, 255]."""

    def __init__(self, root, cases, channel_names):
        super().__init__("images2d", root, cases, channel_names, None, dim=2)

    def load(self, case):
        from PIL import Image, UnidentifiedImageError

        path = case.images[0]
        if not os.path.isfile(path):
            raise DataError(case.case_id, f"image file not found: {path}")
        mode = "L" if len(self.channel_names) == 1 else "RGB"
        try:
            with Image.open(path) as im:
                array = np.asarray(im.convert(mode), dtype=np.float32)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
                ValueError) as e:
            raise DataError(path, f"is not a readable PNG/JPEG image ({e})") from None
        if array.ndim == 2:
            array = array[..., None]
        return LoadedCase(array, None, np.eye(4), (1.0, 1.0), case.case_id, (path,))


class SliceSource(DatasetSource):
    """2D slices along one axis of the canonical volumes of a 3D source.

    The last loaded volume is kept, so reading the slices of a volume in
    order loads it once.
    """

    def __init__(self, inner, axis, cases, parents):
        super().__init__("slices", inner.root, cases, inner.channel_names, inner.label_names,
                         dim=2)
        self.inner = inner
        self.axis = axis
        self.parents = parents  # slice id -> (parent Case, index)
        self._cached = None

    def load(self, case):
        parent, index = self.parents[case.case_id]
        if self._cached is None or self._cached.case_id != parent.case_id:
            self._cached = None  # drop the previous volume before reading the next
            self._cached = self.inner.load(parent)
        vol = self._cached
        if index >= vol.image.shape[self.axis]:
            raise DataError(case.case_id, f"slice {index} is outside the volume of shape "
                            f"{vol.image.shape[:3]}")
        image = np.ascontiguousarray(np.take(vol.image, index, axis=self.axis))
        label = (None if vol.label is None
                 else np.ascontiguousarray(np.take(vol.label, index, axis=self.axis)))
        keep = [a for a in range(3) if a != self.axis]
        # Columns 0, 1 map the slice's two axes, column 2 the cut axis, so a 2D grid
        # step (crop, resample) updates the affine as for any volume.
        affine = vol.affine[:, [*keep, self.axis, 3]].copy()
        affine[:, 3] = vol.affine[:, 3] + index * vol.affine[:, self.axis]
        spacing = tuple(vol.spacing[a] for a in keep)
        return LoadedCase(image, label, affine, spacing, case.case_id, vol.sources)


def split_cases(cases, fractions, seed):
    """Split cases into groups of the given fractions, deterministically.

    Cases are sorted by id, grouped by their source files (all slices of one
    volume land in the same split, so no patient leaks across splits), the
    groups are shuffled with `seed`, and consecutive runs are cut at the
    rounded cumulative fractions.

    Args:
        cases: iterable of `Case`.
        fractions: positive numbers summing to at most 1 (the rest is dropped).
        seed: int seed of the shuffle.

    Returns:
        A list of lists of `Case`, one per fraction, each sorted by id.

    Raises:
        ConfigError: a fraction is not positive, or they sum to more than 1.
    """
    fractions = [float(f) for f in fractions]
    if not fractions or min(fractions) <= 0 or sum(fractions) > 1 + 1e-9:
        raise ConfigError("fractions", f"must be positive and sum to at most 1. "
                          f"Received: {fractions}")
    groups = {}
    for case in sorted(cases, key=lambda c: c.case_id):
        groups.setdefault((case.images, case.label), []).append(case)
    keys = list(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    bounds = np.round(np.cumsum([0.0, *fractions]) * len(keys)).astype(int)
    splits = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        members = [c for i in order[lo:hi] for c in groups[keys[i]]]
        splits.append(sorted(members, key=lambda c: c.case_id))
    return splits


# ----- layouts ---------------------------------------------------------------------------------


def slice_case_id(case_id, axis, index, count):
    """The id of 2D slice `index` (of `count`) along `axis` of case `case_id`.

    The one 2D-slice id format: prepared slices and slices cut in the
    pipeline (`ssl3d_keras.data.pipeline.volume_slices`) are named alike.

    Example:

    >>> slice_case_id("case_012", 2, 40, 155)
    'case_012/z040'
    >>> slice_case_id("case_012", 0, 7, 1200)
    'case_012/x0007'
    """
    width = max(3, len(str(count - 1)))
    return f"{case_id}/{_AXIS_LETTERS[axis]}{index:0{width}d}"


def __getattr__(name):
    # Lazily, because the layouts module builds on the classes of this one.
    if name in _MOVED:
        from ssl3d_keras.data import layouts

        return getattr(layouts, name)
    raise AttributeError(f"module 'ssl3d_keras.data.sources' has no attribute '{name}'")
