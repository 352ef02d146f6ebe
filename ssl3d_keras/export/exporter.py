"""Export an encoder (or a pretraining run's encoder) in every format.

```
OUT/preset/        Keras preset: config.json, model.weights.h5, metadata.json
OUT/savedmodel/    TF Serving + reusable TF Hub SavedModel
OUT/hub.tar.gz     the SavedModel's files at the archive root (Kaggle Models)
```
"""

from pathlib import Path

from ssl3d_keras.errors import ExportError, Ssl3dError
from ssl3d_keras.export import metadata as metadata_lib
from ssl3d_keras.export.archive import write_tar_gz
from ssl3d_keras.export.preset import save_preset
from ssl3d_keras.export.savedmodel import save_savedmodel

__all__ = ["FORMATS", "data_facts", "export_encoder", "export_run", "resolve_formats"]

FORMATS = ("preset", "savedmodel", "hub")
PRESET_DIR, SAVEDMODEL_DIR, HUB_ARCHIVE = "preset", "savedmodel", "hub.tar.gz"


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
                   data=None):
    """Write `encoder` in the chosen formats under `out_dir`.

    Each part is written atomically (temp folder, then `os.replace`). The hub
    archive is packed from the SavedModel (written first if not asked for).

    Args:
        encoder: a built functional `keras.Model` `(batch, *spatial, C)` -> features.
        out_dir: output folder.
        formats: `"all"`, `"preset"`, `"savedmodel"`, `"hub"` or a list of them.
        task, config, summary, data: pretraining facts for the metadata
            (see `ssl3d_keras.export.metadata.build_metadata`).

    Returns:
        dict `{format: path}` of what was written, plus `"metadata"`.
    """
    formats = resolve_formats(formats)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_kwargs = {"task": task, "config": config, "summary": summary, "data": data}
    written = {}
    meta = None
    if "preset" in formats:
        meta = save_preset(encoder, out_dir / PRESET_DIR, **meta_kwargs)
        written["preset"] = str(out_dir / PRESET_DIR)
    if meta is None:
        meta = metadata_lib.build_metadata(encoder, **meta_kwargs)
    if "savedmodel" in formats or "hub" in formats:
        savedmodel = out_dir / SAVEDMODEL_DIR
        save_savedmodel(encoder, savedmodel, metadata=meta)
        if "savedmodel" in formats:
            written["savedmodel"] = str(savedmodel)
        if "hub" in formats:
            written["hub"] = str(write_tar_gz(savedmodel, out_dir / HUB_ARCHIVE))
    written["metadata"] = meta
    return written


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
                          summary=summary, data=facts)


def _checkpoint_step(checkpoint):
    if isinstance(checkpoint, int):
        return checkpoint
    tail = str(checkpoint).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None
