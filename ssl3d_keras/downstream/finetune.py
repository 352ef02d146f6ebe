"""`finetune`: a pretrained (or fresh) encoder + U-Net decoder trained on a few labelled cases.

A run directory holds:

```
config.json       the resolved FinetuneConfig
splits.json       which case trained, validated and tested
checkpoints/      model, both optimisers and the step (resume)
best.weights.h5   the weights with the best validation Dice (best.json says when)
training.csv      step, loss, lr, phase, examples/s, wall
validation.csv    step, mean foreground Dice on the validation cases
tensorboard/      the same as scalars
metrics.json      per test case and class, and the summary (mean, sd, median)
metrics.csv       one row per test case
predictions/      each test case as NIfTI on its source file's grid
model.keras       the fine-tuned model (`ssl3d predict` loads it)
summary.json      what the run did, in short
model.json        what the model takes and gives: dim, channels, classes, divisibility, window
encoder/          the fine-tuned encoder as a preset (when its architecture is a preset's)
```

The schedules and the loop are in `ssl3d_keras.downstream.trainer`; scratch
runs get the same step budget. Classification runs (`task="classification"`)
go through `ssl3d_keras.downstream.classify` and write the same files, with
per-case grades and the quadratic weighted kappa instead of Dice.
"""

import csv
import dataclasses
import math
import time
import zipfile
from pathlib import Path

import numpy as np

from ssl3d_keras.atomic import atomic_path, write_json_atomic
from ssl3d_keras.config import from_dict, to_dict
from ssl3d_keras.downstream.config import FinetuneConfig, validate
from ssl3d_keras.errors import ConfigError, DataError

__all__ = ["finetune", "load_finetuned", "build_encoder_for", "as_config"]

CONFIG_FILE = "config.json"
MODEL_FACTS = "model.json"


def as_config(config):
    """A validated `FinetuneConfig` from a config, a dict, or None."""
    if config is None:
        config = FinetuneConfig()
    elif not isinstance(config, FinetuneConfig):
        config = from_dict(FinetuneConfig, config)
    return validate(config)


# ----- the encoder -----------------------------------------------------------------------------


def _divisible_by(encoder):
    """`PyramidEncoder.divisible_by`, or an exported SavedModel's recorded value."""
    value = getattr(encoder, "divisible_by", None)
    if value is None:
        value = ((getattr(encoder, "ssl3d_metadata", None) or {}).get("input") or {}).get(
            "divisible_by")
    return int(value or 1)


def build_encoder_for(config, channels, dim):
    """The encoder a run starts from, and a line saying where it came from.

    Returns:
        `(encoder, skips, info)`: the encoder `keras.Model`, a callable giving
        its skip dict (`skips_model()` or a `SavedModelLayer(output="skips")`),
        and a dict (`source`, `channel_report`, `divisible_by`, `min_input_size`).

    Raises:
        ConfigError: channels or dimensionality that do not match the data.
    """
    from ssl3d_keras.models.factory import build_encoder

    if config.encoder is None:
        encoder = build_encoder(dict(config.scratch_encoder), input_channels=channels, dim=dim)
        source = f"scratch ({config.scratch_encoder})"
    else:
        from ssl3d_keras.export.loader import load_encoder

        encoder = load_encoder(config.encoder)
        encoder_dim = getattr(encoder, "dim", len(encoder.inputs[0].shape) - 2)
        if encoder_dim != dim:
            raise ConfigError("data.dim", f"the encoder {config.encoder} is {encoder_dim}D; set "
                              f"data.dim={encoder_dim} (a 2D encoder runs slice-wise on 3D "
                              f"cases). Received: data.dim={dim}")
        have = int(encoder.inputs[0].shape[-1])
        if config.scratch:
            if not hasattr(encoder, "get_config") or not hasattr(encoder, "skips_model"):
                raise ConfigError("scratch", f"{config.encoder} is a SavedModel, whose "
                                  "architecture cannot be rebuilt with fresh weights; use its "
                                  "preset, or scratch without an encoder")
            table = encoder.get_config()
            table["input_channels"] = channels
            encoder = type(encoder).from_config(table)
            source = f"scratch (the architecture of {config.encoder})"
        elif have != channels:
            if config.adapt_channels is None:
                raise ConfigError("adapt_channels", f"the encoder {config.encoder} takes {have} "
                                  f"channel(s) and the data has {channels}; set adapt_channels "
                                  "to 'mean', 'repeat' or 'zero' (--adapt-channels) to map its "
                                  f"first convolution. Received: adapt_channels=None")
            from ssl3d_keras.models.channels import adapt_input_channels

            encoder, report = adapt_input_channels(encoder, channels, mode=config.adapt_channels)
            source = f"{config.encoder} ({report})"
        else:
            source = str(config.encoder)
    if hasattr(encoder, "skips_model"):
        skips = encoder.skips_model()
    else:
        from ssl3d_keras.export.layer import SavedModelLayer

        layer = next(x for x in encoder.layers if isinstance(x, SavedModelLayer))
        skips = SavedModelLayer(layer.handle, output="skips", name="savedmodel_skips")
    info = {"source": source, "divisible_by": _divisible_by(encoder),
            "min_input_size": int(getattr(encoder, "min_input_size", 1) or 1)}
    return encoder, skips, info


def _check_patch(config, info):
    size, step = config.patch_size, info["divisible_by"]
    if size % step or size < info["min_input_size"]:
        raise ConfigError("patch_size", f"the encoder needs sizes that are multiples of {step} "
                          f"and at least {info['min_input_size']}. Received: patch_size={size}")
    window = config.evaluation.window or size
    if window % step:
        raise ConfigError("evaluation.window", f"must be a multiple of {step} for this encoder. "
                          f"Received: {window}")
    return window


# ----- the run directory -----------------------------------------------------------------------


def _prepare_run_dir(config, out_dir, resume):
    """`(config, resuming)`: the stored config on resume (`config` is then ignored), else
    `config` validated, with the folder checked and cleared of a previous run's records."""
    path = out_dir / CONFIG_FILE
    if resume:
        if not path.is_file():
            raise DataError(out_dir, "nothing to resume: no config.json in this folder")
        from ssl3d_keras.training.checkpoints import read_json

        return as_config(read_json(path)), True
    if (out_dir / "checkpoints" / "checkpoint").is_file():
        raise ConfigError("out", f"{out_dir} already holds a fine-tuning run; resume it or choose "
                          f"another folder. Received: out={str(out_dir)!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("training.csv", "validation.csv", "best.json", "best.weights.h5",
                  "metrics.json", "metrics.csv", "summary.json"):
        (out_dir / stale).unlink(missing_ok=True)
    return as_config(config), False


def _training_volumes(config, dataset, train_ids):
    from ssl3d_keras.downstream.dataset import case_volumes

    volumes = case_volumes(dataset, train_ids)
    if config.data.dim == 2:
        import tensorflow as tf

        from ssl3d_keras.data.volumes import volume_slices

        counts = sum(int(dataset.cases[c]["final_shape"][config.data.slice_axis])
                     for c in train_ids)
        volumes = volume_slices(volumes, slice_axis=config.data.slice_axis).apply(
            tf.data.experimental.assert_cardinality(counts))
    return volumes


def _validation_score(model, dataset, ids, config, window, info, forward):
    from ssl3d_keras.downstream.evaluate import evaluate_cases

    rows = evaluate_cases(model, dataset, ids, dim=config.data.dim, window=window,
                          evaluation=config.evaluation, divisible_by=info["divisible_by"],
                          slice_axis=config.data.slice_axis, forward=forward)
    values = [r["dice_mean"] for r in rows if not math.isnan(r["dice_mean"])]
    return float(np.mean(values)) if values else float("nan")


@dataclasses.dataclass
class StartedRun:
    """What both downstream tasks set up before training (see `_start_run`)."""

    config: FinetuneConfig
    resuming: bool
    dataset: object
    splits: object
    encoder: object
    skips: object
    info: dict


def _start_run(config, out_dir, resume, verbose):
    """Run folder, data, splits and encoder: everything checked before any training step."""
    import keras

    from ssl3d_keras.downstream.dataset import check_label_values, open_labelled, resolve_dataset
    from ssl3d_keras.downstream.splits import make_splits

    config, resuming = _prepare_run_dir(config, out_dir, resume)
    resolve_dataset(config.data, out_dir, progress=verbose)
    dataset = open_labelled(config.data, config.task)
    s = config.split
    splits = make_splits(list(dataset.cases), label_fraction=s.label_fraction, repeat=s.repeat,
                         seed=s.seed, test_fraction=s.test_fraction,
                         validation_fraction=s.validation_fraction)
    if not resuming:
        if config.task == "segmentation":
            check_label_values(dataset, splits.train + splits.validation + splits.test)
        write_json_atomic(out_dir / CONFIG_FILE, to_dict(config))
        write_json_atomic(out_dir / "splits.json", splits.as_dict())
        write_json_atomic(out_dir / "preprocessing.json",
                          dataset.manifest.get("preprocessing") or {})
    keras.utils.set_random_seed(config.seed)
    dim = config.data.dim if config.task == "segmentation" else dataset.dim
    encoder, skips, info = build_encoder_for(config, dataset.channels, dim)
    info["window"] = _check_patch(config, info)
    if not resuming:
        # What a user of the fine-tuned model needs, kept beside it (the model file lacks it).
        write_json_atomic(out_dir / MODEL_FACTS, {
            "task": config.task, "dim": dim, "slice_axis": config.data.slice_axis,
            "input_channels": dataset.channels, "num_classes": dataset.num_classes,
            "class_names": {str(k): v for k, v in dataset.class_names.items()},
            "divisible_by": info["divisible_by"], "window": info["window"],
            "encoder": info["source"]})
    if verbose:
        what = (f"{dataset.num_classes} classes" if config.task == "segmentation"
                else f"{dataset.num_classes} grades")
        print(f"Fine-tuning {info['source']} for {config.task} on {len(splits.train)} case(s) "
              f"({s.label_fraction:.0%} of {len(splits.pool)}), validating on "
              f"{len(splits.validation)}, testing on {len(splits.test)}; {what}; schedule "
              f"{config.schedule}", flush=True)
    return StartedRun(config, resuming, dataset, splits, encoder, skips, info)


def finetune(config=None, out_dir="runs/finetune", *, resume=False, verbose=True):
    """Fine-tune a segmentation model and score it on whole test cases.

    Args:
        config: a `FinetuneConfig`, a dict of its fields, or None (resume only).
        out_dir: the run directory (see the module docstring).
        resume: continue the run in `out_dir` from its latest checkpoint with
            its stored config.
        verbose: progress bars and messages.

    Returns:
        dict, the summary (also `summary.json`): `test` (mean, sd, median and
        n of every metric), `best_step`, `best_validation_dice`, `splits`,
        `steps`, `wall_time_sec`, `run_dir`.

    Raises:
        ConfigError, DataError: a bad config or dataset, before any training.
    """
    out_dir = Path(out_dir)
    run = _start_run(config, out_dir, resume, verbose)
    if run.config.task == "classification":
        from ssl3d_keras.downstream.classify import finetune_classifier

        return finetune_classifier(run, out_dir, verbose=verbose)
    config, dataset, splits, info = run.config, run.dataset, run.splits, run.info
    window = info["window"]
    from ssl3d_keras.downstream.losses import make_segmentation_loss
    from ssl3d_keras.downstream.models import build_segmentation_model

    model = build_segmentation_model(run.skips, dataset.num_classes, dim=config.data.dim,
                                     input_channels=dataset.channels)
    loss_fn = make_segmentation_loss(config.loss, dataset.num_classes)
    from ssl3d_keras.downstream.evaluate import probability_fn
    from ssl3d_keras.downstream.patches import segmentation_batches
    from ssl3d_keras.downstream.trainer import fit

    def batches(start_batch):
        return segmentation_batches(_training_volumes(config, dataset, splits.train),
                                    patch_size=(config.patch_size,) * config.data.dim,
                                    batch_size=config.batch_size, seed=config.seed,
                                    foreground_share=config.foreground_share,
                                    start_batch=start_batch, cache=config.data.cache)

    # One traced forward pass for every validation and the test (training=False does not
    # depend on which layers are frozen).
    forward = probability_fn(model)

    def score(ids):
        return _validation_score(model, dataset, ids, config, window, info, forward)

    started = time.perf_counter()
    best = fit(model, loss_fn, batches, config, out_dir, resuming=run.resuming,
               validation=(splits.validation, score, "dice_mean"), verbose=verbose)
    summary = _test(model, dataset, splits, config, window, info, out_dir, verbose, forward)
    summary.update({"best_step": best["step"], "best_validation_dice": best["score"]
                    if best["step"] is not None else None, "encoder": info["source"],
                    "steps": config.steps, "run_dir": str(out_dir),
                    "train_wall_time_sec": time.perf_counter() - started})
    return finish_run(model, summary, out_dir, run.encoder)


def finish_run(model, summary, out_dir, encoder=None):
    """Save the fine-tuned model, its encoder, and the summary (last: a finished run has it)."""
    with atomic_path(out_dir / "model.keras") as tmp:
        model.save(str(tmp))
    if encoder is not None and hasattr(encoder, "skips_model"):
        from ssl3d_keras.export.preset import save_preset

        save_preset(encoder, out_dir / "encoder")
    write_json_atomic(out_dir / "summary.json", summary)
    return summary


def _test(model, dataset, splits, config, window, info, out_dir, verbose, forward):
    """Score the test cases, write metrics.json / metrics.csv / predictions; returns the summary."""
    from ssl3d_keras.downstream.evaluate import evaluate_cases
    from ssl3d_keras.downstream.metrics import summarize

    predictions = out_dir / "predictions" if config.evaluation.write_predictions else None
    bar = None
    if verbose:
        import keras

        print(f"Scoring {len(splits.test)} whole test case(s) with sliding windows", flush=True)
        bar = keras.utils.Progbar(len(splits.test), unit_name="case")
    rows = evaluate_cases(model, dataset, splits.test, dim=config.data.dim, window=window,
                          evaluation=config.evaluation, divisible_by=info["divisible_by"],
                          slice_axis=config.data.slice_axis, predictions_dir=predictions,
                          progress=(lambda done, total, case: bar.update(done)) if bar else None,
                          forward=forward)
    metric_keys = [k for k in rows[0] if k != "case"] if rows else []
    stats = summarize([{k: r[k] for k in metric_keys} for r in rows])
    write_json_atomic(out_dir / "metrics.json",
                      {"cases": rows, "summary": stats,
                       "classes": {str(k): v for k, v in dataset.class_names.items()},
                       "note": "Dice 1.0 when a class is absent from both reference and "
                               "prediction; HD95 NaN then (left out of means) and the volume "
                               "diagonal in mm when only one of them is empty"},
                      allow_nan=True)
    with atomic_path(out_dir / "metrics.csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["case", *metric_keys])
        writer.writeheader()
        writer.writerows(rows)
    if verbose and "dice_mean" in stats:
        d = stats["dice_mean"]
        print(f"Test Dice (mean over foreground classes): {d['mean']:.3f} +- {d['sd']:.3f} "
              f"over {d['n']} case(s)", flush=True)
    return {"test": stats, "splits": splits.as_dict()}


def load_finetuned(run_dir):
    """The fine-tuned model and config of a run directory.

    Returns:
        `(model, config)`.

    Raises:
        DataError: no model.keras (the run has not finished), no config.json, or
            a model.keras that Keras refuses in safe mode (a Python lambda, an
            unknown layer, not a `.keras` zip file); the error names the file.
    """
    import keras

    from ssl3d_keras.training.checkpoints import read_json

    run_dir = Path(run_dir)
    path = run_dir / "model.keras"
    if not path.is_file():
        raise DataError(run_dir, "no model.keras: not a finished fine-tuning run (resume it "
                        "to the end first)")
    config = as_config(read_json(run_dir / CONFIG_FILE))
    import ssl3d_keras.downstream.models  # noqa: F401  (registers the serialisable layers)
    import ssl3d_keras.export.layer  # noqa: F401
    import ssl3d_keras.models  # noqa: F401

    try:
        model = keras.saving.load_model(str(path), compile=False)
    except (ValueError, TypeError) as e:
        raise DataError(path, _refused(path, e)) from e
    return model, config


def _refused(path, error):
    """Why Keras would not load `path`, without Keras's advice to turn safe mode off."""
    if not zipfile.is_zipfile(path):
        reason = "not a .keras zip file (truncated or overwritten)"
    else:
        reason = f"Keras refuses it: {str(error).split('. ')[0].rstrip('.')}"
    return (f"{reason}. A fine-tuning run writes a model.keras that loads in Keras safe mode "
            "(which runs no code stored in the file); this one was written elsewhere or "
            "edited: re-run the fine-tuning to write it again")
