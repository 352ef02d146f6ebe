"""Export an encoder (or a pretraining run's encoder) in every format.

```
OUT/preset/        Keras preset: config.json, model.weights.h5, metadata.json
OUT/savedmodel/    TF Serving + reusable TF Hub SavedModel
OUT/hub.tar.gz     the SavedModel's files at the archive root (Kaggle Models)
OUT/export.json    written last: the run and checkpoint, every file's sha256
```

The whole of `OUT` is built beside it and swapped in at once, so `OUT` holds
the old export or the complete new one, never parts of two.
"""

import re
from pathlib import Path

from ssl3d_keras.checksum import sha256_file
from ssl3d_keras.errors import ExportError, Ssl3dError
from ssl3d_keras.export import folder as folder_lib
from ssl3d_keras.export import metadata as metadata_lib
from ssl3d_keras.export.archive import write_tar_gz
from ssl3d_keras.export.preset import save_preset
from ssl3d_keras.export.savedmodel import save_savedmodel

__all__ = ["FORMATS", "data_facts", "export_encoder", "export_run", "resolve_formats"]

FORMATS = ("preset", "savedmodel", "hub")
PRESET_DIR, SAVEDMODEL_DIR, HUB_ARCHIVE = "preset", "savedmodel", "hub.tar.gz"
# What an export folder may hold: its parts, and the temp names older versions left in it.
_EXPORT_ENTRY = re.compile(r"preset|savedmodel|hub\.tar\.gz|export\.json"
                           r"|\.old-.*|\.(preset|savedmodel)[-.].*|\.(hub\.tar\.gz|export\.json)\..*")


def resolve_formats(formats):
    """`"all"`, one name, or a list of names -> tuple of names in `FORMATS`.

    Raises:
        ExportError: an unknown format name.
    """
    if isinstance(formats, str):
        formats = FORMATS if formats == "all" else (formats,)
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format(s) {unknown}; choose from "
                          f"{[*FORMATS, 'all']}. Received: {list(formats)}")
    return formats


def export_encoder(encoder, out_dir, *, formats="all", task=None, config=None, summary=None,
                   data=None, source=None):
    """Write `encoder` in the chosen formats as the export folder `out_dir`.

    The folder is built beside `out_dir`, completed with `export.json` and
    swapped in whole, replacing an earlier export there (all of it: formats not
    asked for this time are gone, so no part outlives its checkpoint). The hub
    archive is packed from the SavedModel, which is written with it.

    Args:
        encoder: a built functional `keras.Model` `(batch, *spatial, C)` -> features.
        out_dir: output folder; it must be missing, empty or an earlier export.
        formats: `"all"`, `"preset"`, `"savedmodel"`, `"hub"` or a list of them.
        task, config, summary, data: pretraining facts for the metadata
            (see `ssl3d_keras.export.metadata.build_metadata`).
        source: JSON-ready dict naming what was exported (e.g. run and checkpoint),
            kept in `export.json`.

    Returns:
        dict `{format: path}` of what was written, plus `"metadata"`.

    Raises:
        ExportError: `out_dir` holds files that are not an export's, another
            process is exporting into it, or writing failed (the earlier export
            is then left as it was).
    """
    formats = resolve_formats(formats)
    given = Path(out_dir)
    meta_kwargs = {"task": task, "config": config, "summary": summary, "data": data}
    with folder_lib.export_folder(given, _EXPORT_ENTRY) as build:
        meta = _write_parts(encoder, build, formats, meta_kwargs)
        folder_lib.write_marker(build, formats=formats, source=source)
    written = {"preset": str(given / PRESET_DIR), "savedmodel": str(given / SAVEDMODEL_DIR),
               "hub": str(given / HUB_ARCHIVE)}
    written = {kind: path for kind, path in written.items() if kind in formats}
    written["metadata"] = meta
    return written


def _write_parts(encoder, build, formats, meta_kwargs):
    """Write the parts into the build folder; returns the metadata."""
    meta = None
    if "preset" in formats:
        meta = save_preset(encoder, build / PRESET_DIR, **meta_kwargs)
    if meta is None:
        meta = metadata_lib.build_metadata(encoder, **meta_kwargs)
    if "savedmodel" in formats or "hub" in formats:
        savedmodel = build / SAVEDMODEL_DIR
        save_savedmodel(encoder, savedmodel, metadata=meta)
        if "hub" in formats:
            write_tar_gz(savedmodel, build / HUB_ARCHIVE)
    return meta


def data_facts(config):
    """Input facts (modality, channels, spacing, normalisation) of a run's data.

    From the facts the run recorded in `config.data.resolved` (the data folder
    is not read, so a run exports after its data moved), else the phantom
    generator's description. Runs written before `data.resolved` existed fall
    back to the prepared folder's manifest when it is still there.
    """
    data = config.data
    if data.prepared:
        resolved = data.resolved
        if resolved is None:
            from ssl3d_keras.data.manifest import Manifest

            try:
                manifest = Manifest.read(data.prepared)
            except Ssl3dError:
                return {"source": data.path}
            channel_names, pre = manifest.channel_names, manifest.preprocessing
        else:
            channel_names, pre = resolved.channel_names, resolved.preprocessing
        return {
            "source": data.path,
            "modality": pre.get("modality", "as prepared (see source)"),
            "channel_names": channel_names,
            "spacing": pre.get("spacing"),
            "normalization": pre.get("normalize", "unknown"),
            "preprocessing": pre,
        }
    return {
        "source": "synthetic phantoms (ssl3d_keras.data.phantoms)",
        "modality": "synthetic phantom",
        "channel_names": [f"phantom_{i}" for i in range(data.phantoms.channels)],
        "spacing": [1.0] * data.dim,
        "normalization": "none (phantom intensities as generated)",
    }


def export_run(run_dir, out_dir, *, formats="all", checkpoint=None, data=None):
    """Export the encoder of a pretraining run (its latest or a named checkpoint).

    Args:
        run_dir: a run directory written by `ssl3d_keras.training.pretrain`.
        out_dir: output folder.
        formats: as in `export_encoder`.
        checkpoint: None (latest), a step number, `"best"` (the best monitored
            checkpoint; its score goes into the metadata's summary), or a
            checkpoint path prefix.
        data: input facts that override those found in the run (e.g. a zoo
            recipe's modality and channel names).

    Returns:
        As `export_encoder`.
    """
    from ssl3d_keras.training import load_run
    from ssl3d_keras.training.checkpoints import read_json
    from ssl3d_keras.training.rundir import RunDir

    paths = RunDir(run_dir)
    if not paths.is_run():
        raise ExportError(f"{run_dir}: not a pretraining run (no config.json)")
    task, config = load_run(run_dir, checkpoint=checkpoint)
    summary = read_json(paths.summary) if paths.summary.is_file() else None
    facts = {**data_facts(config), **(data or {})}
    if summary and checkpoint == "best":
        from ssl3d_keras.training.run import best_checkpoint

        best = best_checkpoint(run_dir)[1]
        summary = {**summary, "steps": best["step"], "final_loss": None, "final_accuracy": None,
                   "best": {"metric": best["metric"], "score": best["score"]}}
    elif summary and checkpoint is not None:
        summary = {**summary, "steps": _checkpoint_step(checkpoint), "final_loss": None,
                   "final_accuracy": None}
    return export_encoder(task.encoder, out_dir, formats=formats, task=task, config=config,
                          summary=summary, data=facts,
                          source=checkpoint_source(run_dir, checkpoint))


def checkpoint_source(run_dir, checkpoint=None):
    """`{"run", "checkpoint", "checkpoint_sha256"}`: which checkpoint of which run an export holds.

    `checkpoint` is resolved as `load_run` resolves it; the sha256 is that of
    the checkpoint's `.index` file (None if it cannot be read).
    """
    import tensorflow as tf

    from ssl3d_keras.training.rundir import RunDir

    paths = RunDir(run_dir)
    if checkpoint == "best":
        from ssl3d_keras.training.run import best_checkpoint

        prefix = best_checkpoint(run_dir)[0]
    elif isinstance(checkpoint, int):
        prefix = paths.checkpoint(checkpoint)
    elif checkpoint is None:
        prefix = tf.train.latest_checkpoint(str(paths.checkpoints))
    else:
        prefix = checkpoint
    index = Path(f"{prefix}.index") if prefix else None
    return {"run": str(Path(run_dir).absolute()),
            "checkpoint": Path(prefix).name if prefix else None,
            "checkpoint_sha256": sha256_file(index) if index and index.is_file() else None}


def _checkpoint_step(checkpoint):
    if isinstance(checkpoint, int):
        return checkpoint
    tail = str(checkpoint).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None
