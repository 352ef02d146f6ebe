"""`prepare_dataset`: a dataset on disk -> preprocessed TFRecord shards + manifest.json.

Cases stream one at a time (load -> preprocess -> write to the current shard),
so memory does not grow with the number of cases. Shards are renamed into
place when complete and `manifest.json` is written last: a prepare that is
killed leaves no manifest, and readers (which start from the manifest) see
nothing half-made. An existing manifest is never replaced unless asked.

Example:

>>> from ssl3d_keras.data.prepare import prepare_dataset
>>> from ssl3d_keras.data.preprocess import PreprocessConfig
>>> manifest = prepare_dataset(                                   # doctest: +SKIP
...     "Task07_Pancreas", "prepared/pancreas",
...     preprocess=PreprocessConfig(spacing=(1.0, 1.0, 1.0), normalize="ct",
...                                 ct_window=(-100, 240), crop_foreground=True),
...     on_error="skip")
"""

import json
import logging
import platform
import sys
from pathlib import Path

import numpy as np

from ssl3d_keras import __version__
from ssl3d_keras.checksum import sha256_file
from ssl3d_keras.config import from_dict, to_dict
from ssl3d_keras.data.holdout import held_out_cases
from ssl3d_keras.data.layouts import discover
from ssl3d_keras.data.manifest import MANIFEST_NAME, Manifest
from ssl3d_keras.data.preprocess import PreprocessConfig
from ssl3d_keras.data.preprocess import preprocess as preprocess_case
from ssl3d_keras.errors import ConfigError, DataError

__all__ = ["prepare_dataset", "prepare_owned", "summary_line"]

SHARD_PREFIX = "shard"
# Per-case padding warnings shown before the rest are only counted (2D slices are thousands).
_MAX_PADDING_LINES = 20

logger = logging.getLogger("ssl3d_keras")


def prepare_dataset(src, out_dir, *, preprocess=None, layout="auto", on_error="fail",
                    examples_per_shard=16, progress=True, overwrite=False, holdout=None,
                    **discover_kwargs):
    """Preprocess every case of a dataset into TFRecord shards and write the manifest.

    Args:
        src: dataset path (see `ssl3d_keras.data.layouts.discover`).
        out_dir: output folder (created). Holds `shard-00000.tfrecord`, ... and
            `manifest.json`.
        preprocess: a `PreprocessConfig` (or a dict of its fields). Default
            `PreprocessConfig()` (z-score over the nonzero voxels, nothing else).
        layout: dataset layout, `"auto"` to detect.
        on_error: `"fail"` raises the first `DataError` of a case (and removes
            the shards written so far); `"skip"` leaves the case out and lists
            it with the reason in `manifest["skipped"]`.
        examples_per_shard: cases per shard file.
        progress: draw a progress bar over the cases on stderr.
        overwrite: replace an existing prepared dataset in `out_dir` (its
            manifest and shards; other files are left alone).
        holdout: cases to leave out for downstream testing, before any is
            read: `{"test_fraction": 0.2, "seed": 0}` (the test split a
            fine-tuning run with those values draws from the labelled cases)
            or `{"cases": "splits.json"}` (see `ssl3d_keras.data.holdout`).
            The ids are recorded in `manifest["held_out"]` and logged.
        **discover_kwargs: `modalities`, `slice_axis`, `four_d`, `unlabelled`
            for `discover`.

    Returns:
        The `Manifest` (also written to `out_dir/manifest.json`).

    Raises:
        DataError: a bad case with `on_error="fail"`, no case could be
            prepared, the dataset is not found, or `out_dir` already holds a
            prepared dataset and `overwrite` is False.
        ConfigError: an invalid option.
    """
    from ssl3d_keras.data import shards as shard_io

    if on_error not in ("fail", "skip"):
        raise ConfigError("on_error", f"must be 'fail' or 'skip'. Received: {on_error!r}")
    config = from_dict(PreprocessConfig, preprocess or {}, "preprocess")
    out_dir = Path(out_dir)
    source = discover(src, layout=layout, **discover_kwargs)
    held_out = None if holdout is None else _hold_out(source, holdout)
    _clear_out_dir(out_dir, overwrite, shard_io)

    cases, skipped = [], []
    channels = None
    hashes = {}
    writer = shard_io.ShardWriter(out_dir, prefix=SHARD_PREFIX,
                                  examples_per_shard=examples_per_shard)
    try:
        with writer, _progress(source.cases, progress) as bar:
            for case in bar:
                try:
                    loaded = source.load(case)
                    if channels is not None and loaded.image.shape[-1] != channels:
                        raise DataError(case.case_id, f"has {loaded.image.shape[-1]} channels, "
                                        f"the cases before it {channels}")
                    image, label, info = preprocess_case(
                        loaded.image, loaded.label, loaded.spacing, config,
                        affine=loaded.affine, case_id=case.case_id,
                        source=loaded.sources[0] if loaded.sources else None)
                    sha = {p: _sha256(p, hashes, shard_io) for p in loaded.sources}
                    _check_json_finite(case.case_id, info, loaded.spacing)
                except DataError as e:
                    if on_error == "fail":
                        raise
                    skipped.append({"id": case.case_id, "sources": _case_files(case),
                                    "reason": str(e)})
                    continue
                channels = image.shape[-1]
                shard = writer.write(case.case_id, image, label)
                cases.append(_case_entry(case, loaded, info, sha, shard))
                del loaded, image, label
        if not cases:
            first = f"; first: {skipped[0]['reason']}" if skipped else ""
            raise DataError(src, f"no case could be prepared ({len(skipped)} skipped{first})")
    except BaseException:
        _remove_shards(out_dir, writer.shards)  # a failed prepare leaves no shards behind
        raise

    manifest = Manifest(
        dim=source.dim,
        channels=int(channels),
        channel_names=list(source.channel_names),
        label_names=(None if source.label_names is None
                     else {str(k): v for k, v in sorted(source.label_names.items())}),
        layout=source.layout,
        source=str(src),
        shards=writer.shards,
        cases=cases,
        skipped=skipped,
        preprocessing={**to_dict(config), "layout": source.layout,
                       "discover": {k: (list(v) if isinstance(v, tuple) else v)
                                    for k, v in discover_kwargs.items()}},
        created_by=_versions(),
        held_out=held_out,
    )
    try:
        manifest.write(out_dir)
    except BaseException:
        # Without this, shards without a manifest would block every rerun (`pretrain --data`).
        _remove_shards(out_dir, writer.shards)
        raise
    _warn_padding(manifest, config.max_padding_share)
    return manifest


def prepare_owned(src, out_dir, **kwargs):
    """Prepare into a folder that belongs to one run (its `OUT/prepared`).

    A finished preparation there (its manifest) is reused. Files without a
    manifest can only be the leftovers of that run's own prepare, killed: they
    are replaced (with a warning), so rerunning the interrupted command goes on
    by itself instead of asking the user to clean up.

    Args:
        src: the raw dataset.
        out_dir: the run's prepared folder.
        **kwargs: for `prepare_dataset` (`overwrite` is decided here).

    Returns:
        The `Manifest` of `out_dir`.
    """
    out_dir = Path(out_dir)
    if Manifest.exists(out_dir):
        logger.info("Using the dataset already prepared in %s", out_dir)
        return Manifest.read(out_dir)
    interrupted = out_dir.is_dir() and any(out_dir.iterdir())
    if interrupted:
        logger.warning("%s holds the leftovers of an interrupted prepare; preparing again",
                       out_dir)
    return prepare_dataset(src, out_dir, overwrite=interrupted, **kwargs)


def summary_line(manifest, out_dir):
    """One line saying what `prepare_dataset` made."""
    n_skipped = len(manifest["skipped"])
    return (f"prepared {len(manifest['cases'])} cases into {len(manifest['shards'])} shards at "
            f"{out_dir} ({n_skipped} skipped{': see manifest.json' if n_skipped else ''})")


def _hold_out(source, spec):
    """Drop the held-out cases from `source` (slices go with their volume); the record."""
    parents = getattr(source, "parents", None)
    key = {c.case_id: (parents[c.case_id][0].case_id if parents else c.case_id)
           for c in source.cases}
    labelled = sorted({key[c.case_id] for c in source.cases
                       if c.label is not None or c.grade is not None})
    ids, rule = held_out_cases(spec, labelled, all_ids=set(key.values()))
    held = set(ids)
    source.cases = [c for c in source.cases if key[c.case_id] not in held]
    logger.info("held out %d cases for downstream testing (%s)", len(ids),
                ", ".join(f"{k}={v}" for k, v in rule.items()))
    return {"rule": rule, "ids": ids}


def _warn_padding(manifest, max_share):
    """One warning per case that is mostly padding (the first few), then the count."""
    padded = manifest.padded_cases(max_share)
    for case_id, share in list(padded.items())[:_MAX_PADDING_LINES]:
        logger.warning("%s: %.0f%% of the prepared volume is padding (outside the foreground's "
                       "bounding box), more than max_padding_share=%.0f%%", case_id, 100 * share,
                       100 * max_share)
    if padded:
        logger.warning("%d of %d prepared cases are more than %.0f%% padding (padding_share per "
                       "case in manifest.json): crop the foreground (crop_foreground, with a "
                       "foreground_threshold below the tissue such as -500 for CT) or reduce "
                       "shape, since empty slabs along an axis give the rotation task away",
                       len(padded), len(manifest.cases), 100 * max_share)


def _case_entry(case, loaded, info, sha, shard):
    entry = {
        "id": case.case_id,
        "sources": list(loaded.sources),
        "sha256": [sha[p] for p in loaded.sources],
        "original_shape": info["original_shape"],
        "final_shape": info["final_shape"],
        "original_spacing": [float(s) for s in loaded.spacing],
        "spacing": info["spacing"],
        "affine": info["affine"],
        # The loaded grid (canonical voxel order), before any crop: where a
        # prediction goes back for sources without a stored grid of their own (DICOM).
        "source_affine": np.asarray(loaded.affine, dtype=np.float64).tolist(),
        "has_label": loaded.label is not None,
        "crop_box": info["crop_box"],
        "resize": info["resize"],
        "pad_crop": info.get("pad_crop"),
        "padding_share": info["padding_share"],
        "normalization": info["normalization"],
        "shard": shard,
    }
    if case.grade is not None:
        entry["grade"] = int(case.grade)
    return entry


def _remove_shards(out_dir, shards):
    for shard in shards:
        (out_dir / shard["path"]).unlink(missing_ok=True)


def _check_json_finite(case_id, info, spacing):
    """A case whose record holds NaN/Inf is a bad case, not a manifest that cannot be written."""
    try:
        json.dumps({"info": info, "spacing": [float(s) for s in spacing]}, allow_nan=False)
    except ValueError:
        raise DataError(case_id, f"preprocessing gave non-finite values (NaN or Inf) in its "
                        f"record. Received spacing {tuple(spacing)}, "
                        f"normalization {info.get('normalization')}") from None


def _case_files(case):
    return [*case.images, *([case.label] if case.label else [])]


def _sha256(path, cache, shard_io):
    # Slices of one volume share its files: hash each file once, keep the cache small.
    if path not in cache:
        if len(cache) > 256:
            cache.clear()
        cache[path] = sha256_file(path)
    return cache[path]


def _clear_out_dir(out_dir, overwrite, shard_io):
    """Refuse to clobber a prepared dataset; with `overwrite`, remove only its files."""
    manifest_path = out_dir / MANIFEST_NAME
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DataError(out_dir, "output path exists and is not a folder")
    leftovers = sorted(p for p in out_dir.iterdir()
                       if p.name.startswith(f"{SHARD_PREFIX}-") and ".tfrecord" in p.name)
    if manifest_path.exists() and not overwrite:
        raise DataError(out_dir, "already holds a prepared dataset (manifest.json); pass "
                        "--overwrite (overwrite=True) to replace it, or choose another folder")
    if (leftovers or list(out_dir.glob(f".{MANIFEST_NAME}.*.tmp*"))) and not overwrite:
        raise DataError(out_dir, f"holds {len(leftovers)} shard files but no manifest.json "
                        f"(an interrupted prepare?); pass --overwrite (overwrite=True) to "
                        f"replace them, or choose another folder")
    listed = []
    if manifest_path.exists():
        try:
            listed = [s["path"] for s in Manifest.read(out_dir).shards]
        except (DataError, KeyError, TypeError):
            listed = []
        manifest_path.unlink()  # first, so an interrupted overwrite leaves no stale manifest
    # A kill while the manifest was written leaves atomic_path's temporary file.
    temporary = [p.name for p in out_dir.glob(f".{MANIFEST_NAME}.*.tmp*")]
    for name in {*listed, *(p.name for p in leftovers), *temporary}:
        target = out_dir / Path(name).name
        if target.is_file():
            target.unlink()


class _NoBar:
    def __init__(self, items):
        self.items = items

    def __enter__(self):
        return self.items

    def __exit__(self, *exc):
        return False


def _progress(items, show):
    if not show:
        return _NoBar(items)
    import click

    return click.progressbar(items, label="preparing", file=sys.stderr, show_pos=True,
                             item_show_func=lambda c: c.case_id if c is not None else "")


def _versions():
    import nibabel
    import scipy
    import tensorflow as tf

    return {"ssl3d_keras": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__,
            "nibabel": nibabel.__version__, "tensorflow": tf.__version__,
            "platform": f"{platform.system()}-{platform.machine()}"}
