"""Export a fine-tuning run: the whole model for serving, and its fine-tuned encoder for reuse.

```
OUT/model/           SavedModel of the whole model (`serving_default`: images -> probabilities,
                     dynamic batch and spatial size) for TF Serving or `tf.saved_model.load`
OUT/model.keras      the Keras model (`keras.saving.load_model`)
OUT/encoder/         the fine-tuned encoder in the pretraining export formats (preset/,
                     savedmodel/, hub.tar.gz), when the run's encoder is a preset architecture
OUT/finetune.json    what to feed and what comes out: task, classes, channels, dim,
                     divisibility, window, preprocessing, test scores
```
"""

import os
import shutil
import tempfile
from pathlib import Path

from ssl3d_keras.atomic import write_json_atomic
from ssl3d_keras.errors import ExportError

__all__ = ["export_finetuned", "is_finetune_run"]


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
        ExportError: the run is not finished.
    """
    from ssl3d_keras.atomic import replace_dir
    from ssl3d_keras.downstream.finetune import MODEL_FACTS, load_finetuned
    from ssl3d_keras.training.checkpoints import read_json

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not (run_dir / "summary.json").is_file():
        raise ExportError(f"{run_dir}: the fine-tuning run has not finished (no summary.json); "
                          "resume it to the end first")
    model, config = load_finetuned(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=out_dir))
    try:
        model.export(str(tmp / "model"), format="tf_saved_model", verbose=False)
        replace_dir(str(tmp / "model"), str(out_dir / "model"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".model.", suffix=".keras",
                                     delete=False) as f:
        staged = f.name
    shutil.copyfile(run_dir / "model.keras", staged)
    os.replace(staged, out_dir / "model.keras")

    encoder_written = None
    if (run_dir / "encoder" / "config.json").is_file():
        from ssl3d_keras.export.exporter import export_encoder
        from ssl3d_keras.export.preset import load_preset

        encoder, _ = load_preset(run_dir / "encoder")
        encoder_written = export_encoder(encoder, out_dir / "encoder", formats=formats)
        encoder_written.pop("metadata", None)

    summary = read_json(run_dir / "summary.json")
    meta = {
        **read_json(run_dir / MODEL_FACTS),
        "preprocessing": read_json(run_dir / "preprocessing.json"),
        "test": summary.get("test"),
        "label_fraction": config.split.label_fraction,
    }
    write_json_atomic(out_dir / "finetune.json", meta, allow_nan=True)
    return {"model": str(out_dir / "model"), "keras": str(out_dir / "model.keras"),
            "encoder": encoder_written, "metadata": meta}
