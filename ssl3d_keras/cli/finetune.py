"""`ssl3d finetune`: fine-tune an encoder on labelled cases and score it on whole test cases."""

import click

from ssl3d_keras.config import set_dotted

# Options whose value goes to one config key (None = not given on the command line).
_OPTION_KEYS = {
    "task": "task",
    "label_fraction": "split.label_fraction",
    "repeat": "split.repeat",
    "schedule": "schedule",
    "steps": "steps",
    "warmup_steps": "warmup_steps",
    "batch_size": "batch_size",
    "patch_size": "patch_size",
    "seed": "seed",
    "dim": "data.dim",
    "adapt_channels": "adapt_channels",
    "loss": "loss",
}


def resolve_encoder(handle):
    """A zoo name becomes the folder of its build (downstream loads paths and URLs only)."""
    from pathlib import Path

    if handle is None or "://" in handle or Path(handle).expanduser().exists():
        return handle
    from ssl3d_keras import zoo

    if handle in zoo.list_recipes():
        return str(zoo.locate(handle))
    return handle


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--encoder", "encoder",
              help="Pretrained encoder: an export folder (OUT of `ssl3d export`), a preset or "
                   "SavedModel folder, a .tar.gz, a built zoo name, or URL#sha256=HEX.")
@click.option("--scratch", is_flag=True,
              help="Fresh weights: the architecture of --encoder if given, else the reduced "
                   "U-Net that `ssl3d pretrain` trains by default. Same step budget.")
@click.option("--data", "data_path", type=click.Path(exists=True),
              help="Labelled dataset: a prepared folder (manifest.json) or a raw Decathlon, "
                   "BraTS, folder or CSV dataset (prepared into OUT/prepared first). "
                   "Default: 40 labelled phantoms (ventricles, nuclei, lesions).")
@click.option("--task", type=click.Choice(["segmentation", "classification"]),
              help="segmentation (U-Net decoder; default) or classification (graded images).")
@click.option("--label-fraction", type=click.FloatRange(0, 1, min_open=True),
              help="Share of the labelled training pool used (nested across fractions). "
                   "Default: 1.")
@click.option("--repeat", type=click.IntRange(min=0),
              help="Which seeded subset of the pool a fraction draws. Default: 0.")
@click.option("--schedule", type=click.Choice(["auto", "frozen", "warmup", "full"]),
              help="frozen: decoder only (encoder and its BatchNorm frozen); warmup: frozen "
                   "for --warmup-steps, then all layers with a fresh optimiser; full: all "
                   "layers throughout. Default: auto (warmup for a pretrained encoder, full "
                   "from scratch).")
@click.option("--warmup-steps", type=click.IntRange(min=0), help="Frozen steps of warmup. "
              "Default: 50.")
@click.option("--steps", type=click.IntRange(min=1), help="Optimisation steps. Default: 300.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Patches per step. Default: 4.")
@click.option("--patch-size", type=click.IntRange(min=4),
              help="Edge of the training patch (and evaluation window). Default: 32.")
@click.option("--dim", type=click.Choice(["2", "3"]),
              help="3: a 3D model; 2: a 2D model run slice by slice on the 3D cases (the "
                   "paper's 2D baseline; needs a 2D encoder or --scratch). Default: 3.")
@click.option("--adapt-channels", type=click.Choice(["mean", "repeat", "zero"]),
              help="Map the encoder's first convolution when the data has another channel "
                   "count. Default: refuse.")
@click.option("--loss", type=click.Choice(["dice_ce", "dice"]),
              help="Soft Dice + cross-entropy (default) or soft Dice alone.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="A .toml or .json FinetuneConfig; options override it.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Set any config key, e.g. --set optimizer.learning_rate=1e-4 "
                   "--set evaluation.overlap=0.25. Repeatable.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Run directory. Default: runs/finetune.")
@click.option("--seed", type=int, help="Seed of weights, patches and order. Default: 0.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest "
              "checkpoint with its stored config.")
@click.option("--quiet", is_flag=True, help="No progress bars; only the final lines.")
def finetune(encoder, scratch, data_path, task, label_fraction, repeat, schedule, warmup_steps,
             steps, batch_size, patch_size, dim, adapt_channels, loss, config_file, overrides,
             out_dir, seed, resume, quiet):
    """Fine-tune a pretrained encoder (or one from scratch) and score it on whole test cases.

    Segmentation puts the paper's U-Net decoder on the encoder's skip outputs,
    trains on patches (a third centred on the foreground) and scores every test
    case whole with sliding windows: Dice and HD95 (mm) per class, background
    excluded. The test split is fixed by the split seed, so runs at different
    label fractions and with different encoders are scored on the same cases.

    \b
    Examples:
      ssl3d pretrain rotation --out runs/rot && ssl3d export runs/rot --out exports/rot
      ssl3d finetune --encoder exports/rot --label-fraction 0.25 --out runs/ft-rot-25
      ssl3d finetune --scratch --label-fraction 0.25 --out runs/ft-scratch-25
      ssl3d finetune --encoder exports/brain --data Task01_BrainTumour --adapt-channels mean
    """
    from pathlib import Path

    from ssl3d_keras.config import apply_overrides, read_config_file
    from ssl3d_keras.downstream.finetune import finetune as run_finetune

    data = {}
    if config_file:
        data = read_config_file(config_file)
        if isinstance(data.get("finetune"), dict):
            data = data["finetune"]
    if encoder is not None:
        data["encoder"] = resolve_encoder(encoder)
    if scratch:
        data["scratch"] = True
    if data_path is not None:
        set_dotted(data, "data.path", str(Path(data_path).resolve()))
    values = {"task": task, "label_fraction": label_fraction, "repeat": repeat,
              "schedule": schedule, "steps": steps, "warmup_steps": warmup_steps,
              "batch_size": batch_size, "patch_size": patch_size, "seed": seed,
              "dim": None if dim is None else int(dim), "adapt_channels": adapt_channels,
              "loss": loss}
    for name, value in values.items():
        if value is not None:
            set_dotted(data, _OPTION_KEYS[name], value)
    apply_overrides(data, overrides)
    out = Path(out_dir or "runs/finetune")
    if resume and data:
        from ssl3d_keras.errors import ConfigError

        raise ConfigError(sorted(data)[0], "a resumed run keeps its stored config "
                          f"({out / 'config.json'}); give only --out and --resume. Received "
                          f"settings for: {', '.join(sorted(data))}")
    summary = run_finetune(None if resume else data, out, resume=resume, verbose=not quiet)
    click.echo(f"\nRun directory: {summary['run_dir']}")
    click.echo(f"  metrics:     {Path(summary['run_dir']) / 'metrics.json'} (per case and class), "
               "metrics.csv")
    click.echo(f"  predictions: {Path(summary['run_dir']) / 'predictions'} (NIfTI on the source "
               "grid)")
    click.echo(f"  model:       {Path(summary['run_dir']) / 'model.keras'} (ssl3d predict "
               f"{summary['run_dir']} --data PATH --out DIR)")
    test = summary["test"]
    if "dice_mean" in test:
        stats = test["dice_mean"]
        click.echo(f"Test Dice (mean over foreground classes): {stats['mean']:.3f} +- "
                   f"{stats['sd']:.3f} over {stats['n']} case(s); best validation at step "
                   f"{summary.get('best_step')}")
    elif "kappa" in test:
        click.echo(f"Test quadratic weighted kappa {test['kappa']:.3f}, accuracy "
                   f"{test['accuracy']:.3f} over {test['n']} case(s)")
