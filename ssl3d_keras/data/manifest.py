"""`Manifest`: what a prepared shard folder holds, written and parsed here only.

`manifest.json` sits beside the TFRecord shards of `ssl3d prepare`. It says
which shards exist (with their sha256), which cases they hold and at what
final shape, how the data were preprocessed and which cases were skipped.
Every reader of the data's facts (the pipeline, the run's config resolution,
the padding warning) goes through `Manifest`, so the file's keys have one home.

A `Manifest` also reads like the dict it was before (`manifest["cases"]`,
`manifest.get("dim")`), so code written against the dict keeps working.

Example:

>>> manifest = Manifest(dim=3, channels=1, cases=[
...     {"id": "a", "final_shape": [8, 6, 4, 1]}, {"id": "b", "final_shape": [8, 6, 2, 1]}])
>>> manifest.spatial_shapes()
[(8, 6, 4), (8, 6, 2)]
>>> manifest.spatial_shapes(dim=2, slice_axis=2)
[(8, 6), (8, 6), (8, 6), (8, 6), (8, 6), (8, 6)]
>>> manifest.cases_smaller_than((8, 6, 3))
['b']
>>> manifest["channels"]
1
"""

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from ssl3d_keras.atomic import write_json_atomic
from ssl3d_keras.errors import DataError

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "Manifest"]

MANIFEST_NAME = "manifest.json"
# The schema version: a reader refuses any other.
MANIFEST_FORMAT = "ssl3d-shards/1"
_REQUIRED_KEYS = ("format", "dim", "channels", "shards")


@dataclasses.dataclass(eq=False)
class Manifest(Mapping):
    """The manifest of a prepared shard folder.

    Args:
        dim: 3 for volumes, 2 for images (or 2D slices prepared as images).
        channels: channels of every image.
        shards: list of `{"path", "count", "sha256"}`, one per shard file.
        cases: list of per-case dicts; `id` and `final_shape` (`(*spatial, C)`)
            are what the library reads, `shard` the file a case is in.
        skipped: list of `{"id", "sources", "reason"}` for cases left out.
        preprocessing: the `PreprocessConfig` used, plus layout and discovery options.
        channel_names: names of the channels in order, or None.
        label_names: `{"value": name}` of the label map, or None.
        layout: the raw dataset's layout ("nifti", "msd", ...), or None.
        source: the raw dataset folder, or None.
        created_by: package versions that wrote it.
        held_out: `{"rule", "ids"}` of the cases left out for downstream
            testing (`prepare_dataset(holdout=...)`), or None.
        format: the schema version, `MANIFEST_FORMAT`.
        extra: keys of the file this version does not know (kept, written back).
    """

    dim: int
    channels: int
    shards: list = dataclasses.field(default_factory=list)
    cases: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)
    preprocessing: dict = dataclasses.field(default_factory=dict)
    channel_names: list | None = None
    label_names: dict | None = None
    layout: str | None = None
    source: str | None = None
    created_by: dict = dataclasses.field(default_factory=dict)
    held_out: dict | None = None
    format: str = MANIFEST_FORMAT
    extra: dict = dataclasses.field(default_factory=dict)

    # --- the dict face -------------------------------------------------------------------
    def to_dict(self):
        """The JSON object written to `manifest.json`."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "extra"}
        return {**self.extra, **data}

    def __getitem__(self, key):
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self):
        return len(self.to_dict())

    def __eq__(self, other):
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other)
        return NotImplemented

    __hash__ = None

    # --- reading and writing ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, data, *, where="manifest"):
        """Check a manifest's JSON object and type it.

        Raises:
            DataError: not an object, another schema version, or a required key missing.
        """
        if isinstance(data, Manifest):
            return data
        if not isinstance(data, dict):
            raise DataError(where, f"manifest must be a JSON object. Received: "
                            f"{type(data).__name__}")
        if data.get("format") != MANIFEST_FORMAT:
            raise DataError(where, f"expected format '{MANIFEST_FORMAT}'. "
                            f"Received: format={data.get('format')!r}")
        missing = [key for key in _REQUIRED_KEYS if key not in data]
        if missing:
            raise DataError(where, f"manifest lacks key(s) {missing}. Received keys: "
                            f"{sorted(data)}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        values["dim"], values["channels"] = int(values["dim"]), int(values["channels"])
        for key in ("shards", "cases", "skipped"):
            values[key] = list(values.get(key) or [])
        values["preprocessing"] = dict(values.get("preprocessing") or {})
        values["created_by"] = dict(values.get("created_by") or {})
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    @classmethod
    def read(cls, folder):
        """Read and check `folder/manifest.json`.

        Raises:
            DataError: the manifest is missing, not JSON, of another format or
                lacks a required key.
        """
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise DataError(path, "no shard manifest here; prepare the raw data first "
                            f"(`ssl3d prepare` or `prepare_dataset`). Received: {folder}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(path, f"manifest is not valid JSON ({e}). Received: "
                            f"{path.stat().st_size} bytes") from None
        return cls.from_dict(data, where=path)

    def write(self, folder):
        """Write `folder/manifest.json` atomically; returns its `Path`."""
        return write_json_atomic(Path(folder) / MANIFEST_NAME, self.to_dict(), allow_nan=False)

    @staticmethod
    def exists(folder):
        """True if `folder` holds a `manifest.json` (a prepared shard folder)."""
        return (Path(folder) / MANIFEST_NAME).is_file()

    # --- facts about the data --------------------------------------------------------------
    def spatial_shapes(self, dim=None, slice_axis=0):
        """Spatial shape of every example the data give, in case order.

        Args:
            dim: None or the manifest's `dim` for one shape per case; 2 for a 3D
                manifest read as 2D slices (one shape per slice).
            slice_axis: the axis cut away when a 3D manifest is read as slices.

        Returns:
            list of tuples of ints.
        """
        shapes = []
        for case in self.cases:
            shape = [int(s) for s in case["final_shape"]][: self.dim]
            if dim == 2 and self.dim == 3:
                count = shape.pop(slice_axis)
                shapes.extend([tuple(shape)] * count)
            else:
                shapes.append(tuple(shape))
        return shapes

    def example_count(self, dim=None, slice_axis=0):
        """Number of volumes (or of slices, for `dim=2` on a 3D manifest)."""
        return len(self.spatial_shapes(dim, slice_axis))

    def padded_cases(self, max_share):
        """`{id: share}` of the cases whose padding share is above `max_share`.

        The share (recorded per case by `prepare_dataset`) is the fraction of
        the prepared volume outside its foreground's bounding box; cases
        prepared before it was recorded are not listed.

        Example:

        >>> Manifest(dim=2, channels=1, cases=[{"id": "a", "padding_share": 0.7},
        ...                                    {"id": "b", "padding_share": 0.1}]).padded_cases(0.5)
        {'a': 0.7}
        """
        return {case["id"]: float(case["padding_share"]) for case in self.cases
                if case.get("padding_share") is not None
                and float(case["padding_share"]) > max_share}

    def cases_smaller_than(self, crop_size, *, dim=None, slice_axis=0):
        """Ids of the cases a crop of `crop_size` would have to zero-pad.

        Args:
            crop_size: tuple of ints, one per spatial axis read.
            dim: as in `spatial_shapes`.
            slice_axis: as in `spatial_shapes`.

        Returns:
            list of case ids (possibly empty).
        """
        small = []
        for case in self.cases:
            spatial = [int(s) for s in case["final_shape"]][: self.dim]
            if dim == 2 and self.dim == 3:
                del spatial[slice_axis]
            if any(s < c for s, c in zip(spatial, crop_size, strict=False)):
                small.append(case["id"])
        return small
