"""Building zoo entries, and finding what was built or published.

A zoo entry is built only by an explicit call: `build(name)` (or
`ssl3d zoo build NAME`) pretrains the recipe and exports it into the cache
entry `<cache>/zoo/<name>-<hash>/export`. `locate(name)` finds an entry that
exists (a verified download of a published artifact, or a cached build) and
never trains; `load_encoder(name)` loads what `locate` finds.

Example:

>>> from ssl3d_keras import zoo
>>> export_dir = zoo.build("phantom-rotation")           # doctest: +SKIP
>>> encoder = zoo.load_encoder("phantom-rotation")       # doctest: +SKIP
"""

import logging
import os
from pathlib import Path

from ssl3d_keras.errors import ExportError
from ssl3d_keras.zoo.recipes import (
    get_recipe,
    input_facts,
    list_recipes,
    recipe_config,
    recipe_hash,
)

__all__ = ["build", "cached_build", "ensure_built", "load_encoder", "locate"]

logger = logging.getLogger("ssl3d_keras")


def _how_to_build(recipe):
    data = " --data PATH" if recipe.needs_data else ""
    return (f"build it with: ssl3d zoo build {recipe.name}{data} (or "
            f"ssl3d_keras.zoo.build({recipe.name!r}{', data=PATH' if data else ''}))")


def _cache_root(cache):
    from ssl3d_keras.export.archive import cache_dir

    return Path(cache or cache_dir())


def build(name, *, data=None, out=None, overrides=(), progress=True, cache=None):
    """Pretrain the recipe `name` and export it; returns the export folder.

    Resumes an interrupted build in the same folder. The config is assembled
    as `ssl3d pretrain --config RECIPE` assembles it (`recipe_config`).

    Args:
        name: a zoo name.
        data: the dataset folder (required for recipes with `data.requires`).
        out: output folder (holds `run/` and `export/`); default the cache entry
            `<cache>/zoo/<name>-<hash>/`.
        overrides: `key=value` strings applied to the `[pretrain]` table.
        progress: show training progress (the progress bar and the log messages).
        cache: cache folder (default `$SSL3D_CACHE` or `~/.cache/ssl3d`).

    Returns:
        `Path` of the export folder (`preset/`, `savedmodel/`, `hub.tar.gz`).

    Raises:
        ExportError: the recipe needs data that was not given.
    """
    from ssl3d_keras.downstream.probe import pretrain_with_probe as pretrain
    from ssl3d_keras.export.exporter import export_run
    from ssl3d_keras.training.rundir import RunDir

    recipe = get_recipe(name)
    if recipe.needs_data and data is None:
        raise ExportError(f"zoo entry '{name}': its weights were never published and it needs "
                          f"{recipe.data.requires}, and no data was given; {_how_to_build(recipe)}")
    config = recipe_config(recipe, data, overrides)
    if out is None:
        out = _cache_root(cache) / "zoo" / f"{name}-{recipe_hash(recipe, data, overrides)}"
    out = Path(out)
    run = RunDir(out / "run")
    logger.info("Building zoo entry %s into %s", name, out)
    pretrain(config, run.root, resume=run.is_run(), verbose=progress)
    export_run(run.root, out / "export", data=input_facts(recipe))
    return out / "export"


def cached_build(name, *, cache=None):
    """The export folder of a cached default build of `name`, or None.

    Only a whole export counts (its `export.json` is written last); an export
    interrupted, or written before the marker existed, is rebuilt by `build`.
    """
    from ssl3d_keras.export.folder import MARKER_FILE

    recipe = get_recipe(name)
    folder = _cache_root(cache) / "zoo" / f"{name}-{recipe_hash(recipe)}" / "export"
    return folder if (folder / MARKER_FILE).is_file() else None


def locate(name, *, cache=None):
    """A local folder with the encoder of zoo entry `name`; never trains.

    A published artifact is downloaded (once) and verified; otherwise the
    cached default build (`build(name)`) is used.

    Raises:
        ExportError: the entry is neither published nor built; the message
            says how to build it.
    """
    recipe = get_recipe(name)
    if recipe.published:
        from ssl3d_keras.export.loader import resolve_handle

        return resolve_handle(recipe.artifact.url, sha256=recipe.artifact.sha256, cache=cache)
    found = cached_build(name, cache=cache)
    if found is not None:
        return found
    if recipe.needs_data:
        why = f"its weights were never published and it needs {recipe.data.requires}"
    else:
        why = "its weights were never published and it is not built yet"
    raise ExportError(f"zoo entry '{name}': {why}; {_how_to_build(recipe)}")


# The name this had before building became an explicit call.
ensure_built = locate


def _is_zoo_name(handle):
    text = os.fspath(handle)
    return "://" not in text and not Path(text).expanduser().exists() and text in list_recipes()


def load_encoder(handle, input_channels=None, trainable=True, *, sha256=None, cache=None):
    """Load a pretrained encoder as a `keras.Model` from a zoo name or any export handle.

    This is `ssl3d_keras.load_encoder`. A zoo name loads its published
    artifact or its cached build and never starts a pretraining: an entry
    that is not built raises an `ExportError` saying how to build it
    (`ssl3d zoo build NAME` or `ssl3d_keras.zoo.build(NAME)`). Every other
    handle goes to `ssl3d_keras.export.load_encoder`.

    Args:
        handle: a zoo name (`ssl3d zoo list`), a preset folder, an export folder
            (`OUT` of `ssl3d export`), a SavedModel folder, a `.tar.gz`, or an
            http(s) URL with its sha256 (`URL#sha256=<hex>` or `sha256=`).
        input_channels: int or None: adapt the first convolution (presets only).
        trainable: bool, sets `model.trainable`.
        sha256: hex digest of a downloaded (or local) archive.
        cache: cache folder (default `$SSL3D_CACHE` or `~/.cache/ssl3d`).

    Returns:
        A `keras.Model` `(batch, *spatial, C)` -> features, with
        `model.ssl3d_metadata` (see `ssl3d_keras.export.load_encoder`).

    Raises:
        ExportError: an unbuilt zoo entry, or an unusable handle.

    Example:

    >>> import ssl3d_keras
    >>> encoder = ssl3d_keras.load_encoder("phantom-rotation")  # doctest: +SKIP
    """
    from ssl3d_keras.export.loader import load_encoder as load_export

    if _is_zoo_name(handle):
        handle = locate(os.fspath(handle), cache=cache)
    return load_export(handle, input_channels, trainable, sha256=sha256, cache=cache)
