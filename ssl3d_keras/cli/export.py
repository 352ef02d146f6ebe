"""`ssl3d export`: write a pretraining run's encoder as preset, SavedModel and hub archive."""

import click

FORMAT_CHOICES = ("preset", "savedmodel", "hub", "all")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: OUT/preset/ (Keras preset), OUT/savedmodel/ (TF Serving + "
                   "TF Hub SavedModel), OUT/hub.tar.gz (Kaggle Models archive). Required.")
@click.option("--format", "formats", type=click.Choice(FORMAT_CHOICES), default=("all",),
              show_default=True, multiple=True,
              help="What to write; repeat the option for several. 'hub' also writes the "
                   "SavedModel it packs.")
@click.option("--checkpoint", type=click.IntRange(min=0), default=None,
              help="Step of the checkpoint to export. Default: the latest checkpoint.")
def export(run_dir, out_dir, formats, checkpoint):
    """Export the encoder of the pretraining run RUN_DIR.

    Every part is written atomically; exporting the same checkpoint twice gives
    the same preset files. Example:

        ssl3d export runs/rot --out exports/rot
    """
    from ssl3d_keras.export.exporter import export_run

    formats = "all" if "all" in formats else list(dict.fromkeys(formats))
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
