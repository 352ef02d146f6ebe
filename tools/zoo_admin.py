"""Maintainer commands for the model zoo: build, verify, write the model cards.

Thin click wrappers: the logic lives in `ssl3d_keras.zoo` and
`ssl3d_keras.export.verify`. Run from the repository root:

    python tools/zoo_admin.py --help
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
ZOO_DIR = REPO / "zoo"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Build, verify and document the zoo's encoders."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _names(names, all_buildable):
    from ssl3d_keras import zoo

    if names:
        return list(names)
    recipes = [zoo.get_recipe(n) for n in zoo.list_recipes()]
    return [r.name for r in recipes
            if not all_buildable or not r.needs_data]


@cli.command("build-all")
@click.argument("names", nargs=-1)
@click.option("--data", "data_path", type=click.Path(exists=True, file_okay=False),
              help="Dataset for recipes that need one (used for every NAME). Default: none, "
                   "so only the phantom recipes are built.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a [pretrain] key of every recipe, e.g. --set steps=10.")
@click.option("--out", "out_root", type=click.Path(file_okay=False),
              help="Build each into OUT/NAME. Default: the cache, where load_encoder finds it.")
def build_all(names, data_path, overrides, out_root):
    """Build NAMES (default: every recipe that builds without data) and export them."""
    from ssl3d_keras import zoo

    names = _names(names, all_buildable=data_path is None)
    with click.progressbar(names, label="zoo build", item_show_func=lambda n: n or "") as bar:
        for name in bar:
            out = Path(out_root) / name if out_root else None
            export = zoo.build(name, data=data_path, out=out, overrides=overrides,
                               progress=False)
            click.echo(f"\n{name}: {export}")


@cli.command()
@click.argument("export_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--python", "python", default=None,
              help="Interpreter for the clients (its folder must hold saved_model_cli). "
                   "Default: this one.")
@click.option("--client", "clients", multiple=True,
              help="Run only these clients (repeatable): hub_tf_keras, keras3_tfsm, "
                   "saved_model_cli, keras3_layer. Default: all.")
def verify(export_dir, python, clients):
    """Check EXPORT_DIR (an `ssl3d export` folder) with every client, in separate processes.

    The reference outputs come from EXPORT_DIR/preset loaded in this process.
    """
    _verify(Path(export_dir), python, clients or None)


def _verify(export_dir, python, clients):
    from ssl3d_keras.export import verify as verify_lib
    from ssl3d_keras.export.preset import load_preset

    encoder, _ = load_preset(export_dir / "preset")
    clients = clients or verify_lib.ALL_CLIENTS
    with tempfile.TemporaryDirectory() as tmp:
        probe = verify_lib.write_probe(encoder, Path(tmp) / "probe.npz")
        results = {}
        with click.progressbar(clients, label="clients") as bar:
            for client in bar:
                results[client] = verify_lib.run_client(client, export_dir / "savedmodel", probe,
                                                        python=python)
    failed = 0
    for client, checks in results.items():
        for name, check in checks.items():
            failed += not check["ok"]
            click.echo(f"{'ok  ' if check['ok'] else 'FAIL'} {client:<16} {name}"
                       + ("" if check["ok"] else f": {check['value']}"))
    if failed:
        click.echo(f"{failed} check(s) failed", err=True)
        sys.exit(1)


@cli.command("verify-clean-venv")
@click.argument("export_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--venv", "venv_dir", type=click.Path(file_okay=False), default=None,
              help="Where to create (or reuse) the venv with only tensorflow, tensorflow-hub "
                   "and tf-keras. Default: a temporary folder, removed afterwards.")
def verify_clean_venv(export_dir, venv_dir):
    """Check that EXPORT_DIR works where ssl3d_keras is NOT installed (self-contained).

    Creates a venv with the pinned tensorflow, tensorflow-hub and tf-keras
    (a pip install; about a minute with pip's cache) and runs the TF Hub,
    tf_keras, TFSMLayer and saved_model_cli clients with its interpreter.
    """
    from ssl3d_keras.export import verify as verify_lib

    with tempfile.TemporaryDirectory() as tmp:
        click.echo("Creating the clean venv (pip install tensorflow tensorflow-hub tf-keras) ...")
        python = verify_lib.make_clean_venv(venv_dir or Path(tmp) / "venv")
        _verify(Path(export_dir), str(python), verify_lib.STANDALONE_CLIENTS)


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=str(ZOO_DIR),
              show_default=True, help="Folder for the NAME.md cards.")
@click.option("--with-builds/--no-builds", default=True, show_default=True,
              help="Add the metadata of a cached build (parameters, output shapes, proxy "
                   "metrics) when one exists.")
def cards(names, out_dir, with_builds):
    """Write the model card (NAME.md) of NAMES (default: every recipe)."""
    from ssl3d_keras import zoo

    for name in _names(names, all_buildable=False):
        recipe = zoo.get_recipe(name)
        meta = None
        built = zoo.cached_build(name) if with_builds else None
        if built is not None:
            meta = json.loads((built / "preset" / "metadata.json").read_text())
        path = Path(out_dir) / f"{name}.md"
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(zoo.render_card(recipe, meta))
        os.replace(tmp, path)
        click.echo(f"wrote {path}" + (" (with build metadata)" if meta else ""))


if __name__ == "__main__":
    cli()
