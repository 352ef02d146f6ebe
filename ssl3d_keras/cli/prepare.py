"""`ssl3d prepare`: preprocess a dataset into TFRecord shards and a manifest."""

import re

import click

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _parse_numbers(name, text, kind):
    if text is None:
        return None
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"expected {kind.__name__} values like '1,1,1'. "
                                 f"Received: {text!r}", param_hint=name) from None
    if not 1 <= len(values) <= 3:
        raise click.BadParameter(f"expected 1 to 3 values. Received: {text!r}", param_hint=name)
    return values


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("src", type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder for the shards and manifest.json.")
@click.option("--layout", default="auto", show_default=True,
              type=click.Choice(["auto", "folder", "decathlon", "brats", "csv", "images2d",
                                 "dicom", "slices"]),
              help="Dataset layout. auto: dataset.json -> decathlon, case folders with "
                   "<case>_seg/<case>_flair files -> brats, a CSV -> csv (column 'image') or images2d "
                   "(column 'id_code'), DICOM files (and no NIfTI) -> dicom (one case per series), "
                   "PNG/JPEG -> images2d, NIfTI files -> folder.")
@click.option("--spacing", default=None, metavar="MM[,MM[,MM]]",
              help="Target voxel size in mm: '1,1,1', or one value for all axes. "
                   "Default: keep each case's spacing.")
@click.option("--normalize", default="zscore", show_default=True,
              type=click.Choice(["zscore", "minmax", "ct", "percentile", "none"]),
              help="Intensity normalisation per channel: zscore over the nonzero voxels; "
                   "minmax to [0, 1]; ct: clip to --ct-window (HU) and scale to [0, 1]; "
                   "percentile: clip to the 0.5/99.5 percentiles of the nonzero voxels, "
                   "then zscore; none.")
@click.option("--ct-window", nargs=2, type=float, default=(-1000.0, 1000.0), show_default=True,
              help="Low and high HU of --normalize ct (pancreas CT: -100 240).")
@click.option("--crop-foreground/--no-crop-foreground", default=False, show_default=True,
              help="Crop each case to the bounding box of its nonzero voxels (label alike).")
@click.option("--shape", default=None, metavar="N[,N[,N]]",
              help="Final spatial shape, centre padded with 0 or cropped: '128,128,128', or "
                   "one value for all axes. Default: keep.")
@click.option("--modalities", default=None,
              help="BraTS channel order, comma separated file suffixes. "
                   "[default: t1,t1ce,t2,flair]")
@click.option("--slice-axis", type=click.IntRange(0, 2), default=None,
              help="Cut the volumes into 2D slices along this canonical (RAS) axis; each "
                   "slice is a case. Implied 0 by --layout slices.")
@click.option("--examples-per-shard", type=click.IntRange(min=1), default=16, show_default=True,
              help="Cases per TFRecord shard.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
              show_default=True,
              help="fail: stop at the first bad case (no output is kept); skip: leave it out "
                   "and list it with the reason in manifest.json.")
@click.option("--overwrite", is_flag=True,
              help="Replace a prepared dataset already in --out (its manifest and shards).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show a progress bar on stderr.")
def prepare(src, out_dir, layout, spacing, normalize, ct_window, crop_foreground, shape,
            modalities, slice_axis, examples_per_shard, on_error, overwrite, progress):
    """Preprocess the dataset at SRC into TFRecord shards plus manifest.json in --out.

    Every case is reoriented to canonical RAS, optionally cropped to its
    foreground, resampled (linear for images, nearest for labels), normalised
    and padded/cropped, then written. The manifest records per case the source
    files with their sha256, the original and final shape, spacing and affine,
    the preprocessing, and every skipped case with the reason.

    Example:

        ssl3d prepare Task07_Pancreas --out prepared/pancreas --spacing 1,1,1 \\
            --normalize ct --ct-window -100 240 --crop-foreground --on-error skip
    """
    from ssl3d_keras.data.layouts import discover
    from ssl3d_keras.data.prepare import prepare_dataset, summary_line
    from ssl3d_keras.data.preprocess import PreprocessConfig

    spacing = _parse_numbers("--spacing", spacing, float)
    shape = _parse_numbers("--shape", shape, int)
    discover_kwargs = {}
    if modalities is not None:
        discover_kwargs["modalities"] = tuple(m.strip() for m in modalities.split(",")
                                              if m.strip())
    if slice_axis is not None:
        discover_kwargs["slice_axis"] = slice_axis
    if (spacing is not None and len(spacing) == 1) or (shape is not None and len(shape) == 1):
        dim = discover(src, layout=layout, **discover_kwargs).dim  # one value -> every axis
        spacing = spacing * dim if spacing is not None and len(spacing) == 1 else spacing
        shape = shape * dim if shape is not None and len(shape) == 1 else shape
    config = PreprocessConfig(spacing=spacing, normalize=normalize, ct_window=tuple(ct_window),
                              crop_foreground=crop_foreground, shape=shape)
    manifest = prepare_dataset(src, out_dir, preprocess=config, layout=layout,
                               on_error=on_error, examples_per_shard=examples_per_shard,
                               progress=progress, overwrite=overwrite, **discover_kwargs)
    click.echo(summary_line(manifest, out_dir))
