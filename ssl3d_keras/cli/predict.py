"""`ssl3d predict`: apply a fine-tuned model to new scans, NIfTI out on each scan's grid."""

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="A NIfTI file, a folder of NIfTI volumes, or a Decathlon / BraTS / CSV "
                   "dataset (its labels, if any, are ignored).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the predictions (<case>.nii.gz).")
@click.option("--layout", default="auto", show_default=True,
              help="Dataset layout: auto, folder, decathlon, brats, csv.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True, help="Stop at an unreadable scan, or report it and go on.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def predict(model, data_path, out_dir, layout, on_error, quiet):
    """Segment the scans in --data with the fine-tuned MODEL (a `ssl3d finetune` run folder).

    Each scan gets the preprocessing the model was trained with, is predicted
    whole with sliding windows, and its label map is resampled back to the scan
    file's own grid and affine, so it overlays the scan in any viewer. Values are
    the run's classes (see its metrics.json for their names).

    \b
    Example:
      ssl3d predict runs/ft-rot --data new_scans/ --out predictions/
    """
    import sys

    from ssl3d_keras.downstream.predict import predict_dataset

    bar = None
    if not quiet:
        import keras

        bar = keras.utils.Progbar(None, unit_name="case")
    results = predict_dataset(model, data_path, out_dir, layout=layout, on_error=on_error,
                              progress=(lambda done, total, case: bar.update(done))
                              if bar else None)
    written = [r for r in results if "prediction" in r]
    failed = [r for r in results if "error" in r]
    click.echo(f"\nwrote {len(written)} prediction(s) to {out_dir}")
    for r in failed:
        click.echo(f"skipped {r['case']}: {r['error']}", err=True)
    if failed:
        sys.exit(1 if not written else 0)
