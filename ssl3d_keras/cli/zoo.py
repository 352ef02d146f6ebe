"""`ssl3d zoo`: list, describe, verify and build the pretrained encoders of the zoo."""

import json
from pathlib import Path

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def zoo():
    """The model zoo: one recipe per pretrained encoder (paper settings and phantoms)."""


@zoo.command("list")
@click.option("--paper/--all", "paper_only", default=False,
              help="Only the recipes with the paper's settings. Default: all recipes.")
def list_(paper_only):
    """List the recipes: name, whether it builds here, its model card, title.

    `ssl3d zoo info NAME --card` prints a card.
    """
    from ssl3d_keras import zoo as zoo_lib

    for name in zoo_lib.list_recipes():
        recipe = zoo_lib.get_recipe(name)
        if paper_only and not recipe.paper:
            continue
        if recipe.published:
            state = "published"
        elif recipe.needs_data:
            state = "needs data"
        else:
            state = "builds here"
        card = "card" if recipe.card else "no card"
        click.echo(f"{name:<26} {state:<12} {card:<8} {recipe.title}")


@zoo.command()
@click.argument("name")
@click.option("--card", is_flag=True, help="Print the full model card (Markdown) instead.")
def info(name, card):
    """Describe recipe NAME: data, task, encoder, optimiser, expected metric, weights."""
    from ssl3d_keras import zoo as zoo_lib

    if card:
        recipe = zoo_lib.get_recipe(name)
        click.echo(recipe.card or zoo_lib.render_card(recipe))
    else:
        click.echo(zoo_lib.describe(name))


@zoo.command()
@click.argument("name")
@click.option("--data", "data_path", type=click.Path(exists=True, file_okay=False),
              help="The dataset the recipe needs (see `ssl3d zoo info NAME`). Default: none "
                   "(only the phantom recipes build without data).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Folder for run/ and export/. Default: the cache "
                   "($SSL3D_CACHE or ~/.cache/ssl3d)/zoo/NAME-HASH, which load_encoder(NAME) uses.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a [pretrain] key, e.g. --set steps=50 (repeatable).")
@click.option("--quiet", is_flag=True, help="Do not print training progress.")
def build(name, data_path, out_dir, overrides, quiet):
    """Pretrain recipe NAME and export it (resumes an interrupted build)."""
    from ssl3d_keras import zoo as zoo_lib
    from ssl3d_keras.cli.main import show_library_log

    with show_library_log(quiet):
        export_dir = zoo_lib.build(name, data=data_path, out=out_dir, overrides=overrides,
                                   progress=not quiet)
    click.echo(f"Built {name}: {export_dir}")
    meta = json.loads((Path(export_dir) / "preset" / "metadata.json").read_text())
    metrics = meta["pretraining"].get("final_metrics") or {}
    click.echo("Proxy metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                                              if isinstance(v, (int, float))))
    click.echo(f"Load it with: ssl3d_keras.load_encoder({str(export_dir)!r})")


@zoo.command()
@click.argument("recipe")
@click.option("--data", "data_path", required=True, type=click.Path(exists=True),
              help="The raw dataset the recipe needs (what `ssl3d zoo build NAME --data` takes).")
@click.option("--cases", default=3, show_default=True, type=click.IntRange(min=1),
              help="Cases to prepare, spread evenly over the dataset in id order.")
def verify(recipe, data_path, cases):
    """Prepare a few cases with RECIPE's preprocessing and check them against its card.

    RECIPE is a zoo name or a recipe TOML file. Checks, per case: the spatial
    shape equals the recipe's resize, the channel count its channel names, the
    padding share (voxels outside the foreground's bounding box) is at most
    the recipe's max_padding_share, the intensities after normalisation are
    finite and in range, and every example is at least the task's crop. Prints
    a table and exits 1 with one line per failed check. Run it before spending
    days of compute on `ssl3d zoo build`.
    """
    import sys

    from ssl3d_keras.zoo.verify import verify_recipe

    report = verify_recipe(recipe, data_path, cases=cases)
    click.echo(report.table())
    failures = report.failures()
    if failures:
        for line in failures:
            click.echo(f"FAIL {line}", err=True)
        click.echo(f"{len(failures)} check(s) failed", err=True)
        sys.exit(1)
    click.echo(f"ok: {len(report.cases)} case(s) match the recipe {report.recipe}")
