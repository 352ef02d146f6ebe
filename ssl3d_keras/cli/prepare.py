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


def _parse_holdout(text):
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not _NUMBER.match(parts[0]):
        return {"cases": text}
    try:
        if len(parts) > 2:
            raise ValueError
        return {"test_fraction": float(parts[0]), "seed": int(parts[1]) if len(parts) > 1 else 0}
    except ValueError:
        raise click.BadParameter(f"expected FRACTION[,SEED] like '0.2,0' or a JSON file. "
                                 f"Received: {text!r}", param_hint="--holdout") from None


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
              help="Crop each case to the bounding box of its foreground (label alike): the "
                   "nonzero voxels, or those above --foreground-threshold.")
@click.option("--foreground-threshold", type=float, default=None, metavar="VALUE",
              help="Foreground is above VALUE (in the image's units, before normalisation), "
                   "for --crop-foreground and the padding check. CT: -500 (air is -1000 HU, "
                   "so the default, nonzero, crops nothing). Default: nonzero voxels.")
@click.option("--resize", default=None, metavar="N[,N[,N]]",
              help="Resample each (cropped, resampled) case to this fixed spatial shape, "
                   "linear for images and nearest for labels, keeping its physical extent: "
                   "'128,128,128', '224,224' for photographs, or one value for all axes. "
                   "The affine and manifest record it, so predictions go back to the source "
                   "grid. Default: keep.")
@click.option("--shape", default=None, metavar="N[,N[,N]]",
              help="Final spatial shape, centre padded with 0 or cropped: '128,128,128', or "
                   "one value for all axes. Default: keep.")
@click.option("--max-padding-share", type=click.FloatRange(0, 1), default=0.5,
              show_default=True,
              help="Warn about each case whose prepared volume is more than this share of "
                   "padding (outside its foreground's bounding box); the share of every case "
                   "is in manifest.json. Empty slabs along an axis give the rotation task away.")
@click.option("--max-voxels", type=click.IntRange(min=1), default=512**3, show_default=True,
              help="Refuse a case whose resampled or resized volume would have more voxels "
                   "(a wrong voxel size in a header must fail, not fill the memory).")
@click.option("--include-unlabelled", is_flag=True,
              help="Decathlon layout: add the unlabelled imagesTs cases (for pretraining).")
@click.option("--holdout", default=None, metavar="FRACTION[,SEED]|FILE",
              help="Leave out, before reading them, the cases a fine-tuning run tests on: "
                   "'0.2' or '0.2,0' (its split's test_fraction and seed, defaults 0.2 and 0; "
                   "drawn from the labelled cases) or a splits.json / JSON list of case ids. "
                   "The held-out ids are listed in manifest.json.")
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
def prepare(src, out_dir, layout, spacing, normalize, ct_window, crop_foreground,
            foreground_threshold, resize, shape, max_padding_share, max_voxels,
            include_unlabelled, holdout, modalities, slice_axis, examples_per_shard, on_error,
            overwrite, progress):
    """Preprocess the dataset at SRC into TFRecord shards plus manifest.json in --out.

    Every case is reoriented to canonical RAS, optionally cropped to its
    foreground, resampled to a spacing and/or resized to a shape (linear for
    images, nearest for labels), normalised and padded/cropped, then written.
    The manifest records per case the source files with their sha256, the
    original and final shape, spacing and affine, the resize, the padding
    share, the preprocessing, and every skipped case with the reason. Cases
    that are mostly padding are reported.

    Example:

    \b
        ssl3d prepare Task07_Pancreas --out prepared/pancreas --crop-foreground \\
            --foreground-threshold -500 --resize 128 --normalize ct --ct-window -100 240 \\
            --include-unlabelled --on-error skip
    """
    from ssl3d_keras.cli.main import show_library_log
    from ssl3d_keras.data.layouts import discover
    from ssl3d_keras.data.prepare import prepare_dataset, summary_line
    from ssl3d_keras.data.preprocess import PreprocessConfig

    spacing = _parse_numbers("--spacing", spacing, float)
    shape = _parse_numbers("--shape", shape, int)
    resize = _parse_numbers("--resize", resize, int)
    discover_kwargs = {}
    if modalities is not None:
        discover_kwargs["modalities"] = tuple(m.strip() for m in modalities.split(",")
                                              if m.strip())
    if slice_axis is not None:
        discover_kwargs["slice_axis"] = slice_axis
    if include_unlabelled:
        discover_kwargs["unlabelled"] = True
    if any(v is not None and len(v) == 1 for v in (spacing, shape, resize)):
        dim = discover(src, layout=layout, **discover_kwargs).dim  # one value -> every axis
        spacing, shape, resize = (v * dim if v is not None and len(v) == 1 else v
                                  for v in (spacing, shape, resize))
    config = PreprocessConfig(spacing=spacing, resize=resize, normalize=normalize,
                              ct_window=tuple(ct_window), crop_foreground=crop_foreground,
                              foreground_threshold=foreground_threshold, shape=shape,
                              max_voxels=max_voxels, max_padding_share=max_padding_share)
    with show_library_log():
        manifest = prepare_dataset(src, out_dir, preprocess=config, layout=layout,
                                   on_error=on_error, examples_per_shard=examples_per_shard,
                                   progress=progress, overwrite=overwrite,
                                   holdout=_parse_holdout(holdout), **discover_kwargs)
    click.echo(summary_line(manifest, out_dir))
