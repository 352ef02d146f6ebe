"""`ssl3d show`: draw phantoms, or one example of a proxy task, to a PNG."""

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("target")
@click.option("--out", "out_png", required=True, type=click.Path(dir_okay=False),
              help="PNG file to write (parent folders are created).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the phantoms (and of the task's example).")
@click.option("--size", default=64, show_default=True, type=click.IntRange(min=8),
              help="Phantom edge length in voxels.")
@click.option("--channels", default=1, show_default=True, type=click.IntRange(min=1),
              help="Phantom contrasts (each drawn for TARGET phantoms; channel 0 for a task).")
@click.option("--dim", default=3, show_default=True, type=click.Choice(["2", "3"]),
              help="3: volumes (axial/coronal/sagittal planes through the centre); 2: images.")
@click.option("--n", "n", default=3, show_default=True, type=click.IntRange(min=1),
              help="Number of phantoms drawn (TARGET phantoms only).")
def show(target, out_png, seed, size, channels, dim, n):
    """Draw TARGET to a PNG: `phantoms`, or a proxy task name (cpc, rotation, jigsaw, rpl,
    exemplar) for one of its training examples on a phantom.

    Examples:

        ssl3d show phantoms --out phantoms.png --channels 2

        ssl3d show jigsaw --out jigsaw.png
    """
    if target == "phantoms":
        from ssl3d_keras.visualize.phantoms import draw_phantoms

        path = draw_phantoms(out_png, n=n, size=size, channels=channels, dim=int(dim), seed=seed)
    else:
        from ssl3d_keras.tasks import get_class

        get_class(target)  # an unknown name raises ConfigError with a suggestion
        from ssl3d_keras.visualize.tasks import draw_task

        path = draw_task(target, out_png, dim=int(dim), size=size, channels=channels, seed=seed)
    click.echo(f"Wrote {path}")
