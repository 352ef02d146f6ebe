"""`ssl3d export`: write a pretraining run's encoder as preset, SavedModel and hub archive."""

import click

FORMAT_CHOICES = ("preset", "savedmodel", "hub", "all")


class CheckpointType(click.ParamType):
    """A checkpoint step (int >= 0) or `best`."""

    name = "STEP|best"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "best":
            return value
        if str(value).isdigit():
            return int(value)
        self.fail(f"expected a step number or 'best'. Received: {value!r}", param, ctx)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: OUT/preset/ (Keras preset), OUT/savedmodel/ (TF Serving + "
                   "TF Hub SavedModel), OUT/hub.tar.gz (Kaggle Models archive). Required.")
@click.option("--format", "formats", type=click.Choice(FORMAT_CHOICES), default=("all",),
              show_default=True, multiple=True,
              help="What to write; repeat the option for several. 'hub' also writes the "
                   "SavedModel it packs.")
@click.option("--checkpoint", type=CheckpointType(), default=None,
              help="Step of the checkpoint to export, or 'best' (the checkpoint with the best "
                   "monitored score of a run pretrained with monitor.every > 0). Default: the "
                   "latest checkpoint.")
def export(run_dir, out_dir, formats, checkpoint):
    """Export the encoder of the pretraining run RUN_DIR, or a fine-tuning run.

    OUT also holds export.json, written last: the run (and checkpoint) it came
    from and the sha256 of every file. OUT is built beside itself and replaced as a whole on
    re-export (a failed export leaves the previous one as it was), and loaders
    refuse a partial or mixed OUT (files missing, changed or added since).
    Exporting the same checkpoint twice gives the same preset files. A fine-tuning run (`ssl3d finetune`) exports the whole
    model as a SavedModel for serving (OUT/model/), OUT/model.keras, its
    fine-tuned encoder in the formats asked for (OUT/encoder/) and
    OUT/finetune.json (what to feed, classes, scores). Examples:

    \b
        ssl3d export runs/rot --out exports/rot
        ssl3d export runs/rot --out exports/rot-best --checkpoint best
        ssl3d export runs/ft-rot --out exports/ft-rot
    """
    from ssl3d_keras.downstream.export import export_finetuned, is_finetune_run
    from ssl3d_keras.export.exporter import export_run

    formats = "all" if "all" in formats else list(dict.fromkeys(formats))
    if is_finetune_run(run_dir):
        if checkpoint is not None:
            raise click.BadParameter("a fine-tuning run exports its best validated model; "
                                     "--checkpoint is for pretraining runs",
                                     param_hint="--checkpoint")
        written = export_finetuned(run_dir, out_dir, formats=formats)
        click.echo(f"Exported the fine-tuning run {run_dir} to {out_dir}:")
        click.echo(f"  model      {written['model']} (serving_default: images -> "
                   "probabilities)")
        click.echo(f"  keras      {written['keras']}")
        for kind, path in (written["encoder"] or {}).items():
            click.echo(f"  encoder    {path} ({kind})")
        return
    click.echo(f"Exporting {run_dir} ({'latest' if checkpoint is None else checkpoint} "
               f"checkpoint) to {out_dir} ...")
    written = export_run(run_dir, out_dir, formats=formats, checkpoint=checkpoint)
    meta = written["metadata"]
    for kind in ("preset", "savedmodel", "hub"):
        if kind in written:
            click.echo(f"  {kind:<10} {written[kind]}")
    inp, out = meta["input"], meta["outputs"]["features"]
    click.echo(f"  input      {inp['shape']} ({', '.join(inp['channel_names'])}), "
               f"min size {inp['min_input_size']}, divisible by {inp['divisible_by']}")
    click.echo(f"  features   stride {out['stride']}, {out['channels']} channels; "
               f"{meta['encoder']['parameter_count']} parameters")
