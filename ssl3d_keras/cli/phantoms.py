"""`ssl3d phantoms`: write synthetic head phantoms as a Decathlon dataset."""

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write dataset.json, imagesTr/ and labelsTr/ into (created).")
@click.option("--n", "n", required=True, type=click.IntRange(min=1),
              help="Number of phantoms (cases phantom_000, phantom_001, ...).")
@click.option("--size", default=64, show_default=True, type=click.IntRange(min=8),
              help="Edge length in voxels (1 mm isotropic): size^3 volumes, size^2 images.")
@click.option("--channels", default=1, show_default=True, type=click.IntRange(min=1),
              help="Contrasts per case: T1-like, T2-like, FLAIR-like, PD-like, then random "
                   "ones. More than one gives 4D images (X, Y, Z, C).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Data set seed; the same seed writes the same phantoms.")
@click.option("--dim", default=3, show_default=True, type=click.Choice(["2", "3"]),
              help="3: head volumes; 2: the coronal plane through the centre, stored as "
                   "single-slice volumes (X, Z, 1).")
def phantoms(out_dir, n, size, channels, seed, dim):
    """Write N synthetic head phantoms with labels as a Medical Segmentation Decathlon dataset.

    Each case has skin, skull, brain, ventricles, two deep nuclei, a superior
    sinus, eyes, a cerebellum, a brainstem and sometimes lesions, with a small
    random pose, textures, a bias field and Rician noise. Example:

        ssl3d phantoms --out data/phantoms --n 20 --channels 2
    """
    from ssl3d_keras.data.phantoms import write_phantom_dataset

    with click.progressbar(length=n, label="Writing phantoms") as bar:
        out = write_phantom_dataset(out_dir, n, size=size, channels=channels, seed=seed,
                                    dim=int(dim), callback=lambda index, path: bar.update(1))
    click.echo(f"Wrote {n} phantoms ({dim}D, size {size}, {channels} channel(s), seed {seed}) "
               f"to {out}: dataset.json, imagesTr/, labelsTr/")
