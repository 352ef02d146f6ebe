"""Export a fine-tuning run: the whole model for serving, and its fine-tuned encoder for reuse.

```
OUT/model/           SavedModel of the whole model (`serving_default`: images -> probabilities,
                     dynamic batch and spatial size) for TF Serving or `tf.saved_model.load`
OUT/model.keras      the Keras model (`keras.saving.load_model`)
OUT/encoder/         the fine-tuned encoder in the pretraining export formats (preset/,
                     savedmodel/, hub.tar.gz), when the run's encoder is a preset architecture
OUT/finetune.json    what to feed and what comes out: task, classes, channels, dim,
                     divisibility, window, preprocessing, test scores
OUT/export.json      written last: the run, and every file's sha256
```

As for a pretraining export, the whole of `OUT` is built beside it and swapped
in at once (`ssl3d_keras.atomic.atomic_dir`): a killed re-export leaves the old
export whole, never a model of one run beside the encoder of another.
"""

import re
import shutil
from pathlib import Path

from ssl3d_keras.atomic import write_json_atomic
from ssl3d_keras.errors import ExportError

__all__ = ["export_finetuned", "is_finetune_run"]

# What a fine-tuning export folder may hold: its parts, and the temp names older versions left.
_EXPORT_ENTRY = re.compile(r"model|model\.keras|encoder|finetune\.json|export\.json"
                           r"|\.(model|old)-.*|\.model\..*\.keras|\.finetune\.json\..*")


def is_finetune_run(run_dir):
    """True for a folder written by `ssl3d finetune` (it has `splits.json`)."""
    return (Path(run_dir) / "splits.json").is_file()


def export_finetuned(run_dir, out_dir, *, formats="all"):
    """Export a finished fine-tuning run.

    Args:
        run_dir: a finished `ssl3d finetune` run (with `model.keras`).
        out_dir: output folder (see the module docstring).
        formats: formats of the fine-tuned encoder, as in
            `ssl3d_keras.export.exporter.export_encoder`.

    Returns:
        dict of what was written: `model`, `keras`, `encoder` (a dict, or None),
        `metadata` (the content of finetune.json).

    Raises:
        ExportError: the run is not finished; `out_dir` holds other files, or
            another export into it is running; writing failed (an earlier
            export there is then unchanged).
    """
    from ssl3d_keras.downstream.finetune import load_finetuned
    from ssl3d_keras.export.folder import export_folder, write_marker

    run_dir, given = Path(run_dir), Path(out_dir)
    if not (run_dir / "summary.json").is_file():
        raise ExportError(f"{run_dir}: the fine-tuning run has not finished (no summary.json); "
                          "resume it to the end first")
    model, config = load_finetuned(run_dir)
    meta = _facts(run_dir, config)
    with export_folder(given, _EXPORT_ENTRY) as build:
        model.export(str(build / "model"), format="tf_saved_model", verbose=False)
        shutil.copyfile(run_dir / "model.keras", build / "model.keras")
        encoder_written = _export_encoder(run_dir, build / "encoder", given / "encoder", formats)
        write_json_atomic(build / "finetune.json", meta, allow_nan=True)
        parts = ["model", "keras", *(["encoder"] if encoder_written else [])]
        write_marker(build, formats=parts, source={"run": str(run_dir.absolute())})
    return {"model": str(given / "model"), "keras": str(given / "model.keras"),
            "encoder": encoder_written, "metadata": meta}


def _export_encoder(run_dir, build, final, formats):
    """The fine-tuned encoder in the pretraining formats, when it is a preset architecture."""
    if not (run_dir / "encoder" / "config.json").is_file():
        return None
    from ssl3d_keras.export.exporter import export_encoder
    from ssl3d_keras.export.preset import load_preset

    encoder, _ = load_preset(run_dir / "encoder")
    written = export_encoder(encoder, build, formats=formats)
    written.pop("metadata", None)
    return {kind: str(final / Path(path).name) for kind, path in written.items()}


def _facts(run_dir, config):
    """The content of finetune.json: what to feed, what comes out, the test scores."""
    from ssl3d_keras.downstream.finetune import MODEL_FACTS
    from ssl3d_keras.training.checkpoints import read_json

    summary = read_json(run_dir / "summary.json")
    return {
        **read_json(run_dir / MODEL_FACTS),
        "preprocessing": read_json(run_dir / "preprocessing.json"),
        "test": summary.get("test"),
        "label_fraction": config.split.label_fraction,
    }
