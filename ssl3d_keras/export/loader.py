"""`load_encoder(handle)`: one entry point for every kind of export on disk or on the web.

A handle is a preset folder, an export folder (with `preset/` or
`savedmodel/`, checked against its `export.json`), a SavedModel folder, a `.tar.gz`, or an `http(s)` URL with a
sha256 (`https://.../x.tar.gz#sha256=<hex>` or the `sha256=` argument). This
module resolves paths and URLs only and never imports the zoo; zoo names are
resolved one floor up by `ssl3d_keras.load_encoder` (`ssl3d_keras.zoo.load_encoder`),
which hands the folder it finds to this function.
"""

import logging
import os
from pathlib import Path

from ssl3d_keras.atomic import FolderBusyError, atomic_dir, folder_lock, has_leftovers, recover_dir
from ssl3d_keras.checksum import sha256_file
from ssl3d_keras.errors import ExportError
from ssl3d_keras.export import folder as folder_lib
from ssl3d_keras.export.archive import cache_dir, download, safe_extract

__all__ = ["extract_cached", "load_encoder", "resolve_handle", "savedmodel_as_model"]

logger = logging.getLogger("ssl3d_keras")


def _is_preset(path):
    return (path / "config.json").is_file() and (path / "model.weights.h5").is_file()


def _is_savedmodel(path):
    return (path / "saved_model.pb").is_file()


def _is_export(path):
    return any((path / name).exists() for name in (folder_lib.MARKER_FILE, "preset", "savedmodel"))


def _recover(path):
    """Put back an export folder that a kill during its replacement left set aside."""
    try:
        with folder_lock(path, blocking=False):
            recover_dir(path)
    except FolderBusyError as e:
        raise ExportError(f"{e.strerror}; load it when that export has finished") from None
    except OSError as e:
        raise ExportError(f"{path}: an interrupted export left it set aside and it cannot be "
                          f"restored here ({e})") from None


def extract_cached(archive, *, cache=None, **caps):
    """Extract a `.tar.gz` once into `<cache>/extracted/<sha256>/` (safely) and return it.

    `caps` (`max_bytes`, `max_members`) go to `ssl3d_keras.export.archive.safe_extract`.
    """
    digest = sha256_file(archive)
    target = Path(cache or cache_dir()) / "extracted" / digest
    if target.is_dir():
        return target
    with atomic_dir(target) as tmp:
        safe_extract(archive, tmp, **caps)
    return target


def savedmodel_as_model(path, *, trainable=True):
    """A `keras.Model` around a reusable SavedModel (through `SavedModelLayer`)."""
    import keras
    import tensorflow as tf

    from ssl3d_keras.export.layer import SavedModelLayer

    signature = tf.saved_model.load(str(path)).signatures.get("serving_default")
    if signature is None:
        raise ExportError(f"{path}: the SavedModel has no serving_default signature")
    spec = next(iter(signature.structured_input_signature[1].values()))
    inputs = keras.Input(tuple(spec.shape[1:]), name="inputs")
    layer = SavedModelLayer(str(path), trainable=trainable, name="savedmodel_encoder")
    return keras.Model(inputs, layer(inputs), name=Path(path).name or "encoder")


def resolve_handle(handle, *, sha256=None, cache=None):
    """Turn a path or URL handle into a local folder (a preset, an export or a SavedModel).

    URLs are downloaded and verified; archives are extracted safely.

    Raises:
        ExportError: not a folder, an archive or an http(s) URL, or a checksum mismatch.
    """
    text = os.fspath(handle)
    if text.startswith(("http://", "https://")):
        archive = download(text, sha256, cache=cache)
        return extract_cached(archive, cache=cache)
    if "://" in text:
        raise ExportError(f"unsupported handle scheme; use a path or an http(s) URL. "
                          f"Received: {text}")
    path = Path(text).expanduser()
    if not path.exists() and has_leftovers(path):
        _recover(path)
    if path.is_file() and (path.name.endswith((".tar.gz", ".tgz", ".tar"))):
        if sha256 and sha256_file(path) != sha256.lower():
            raise ExportError(f"{path}: sha256 mismatch. Expected {sha256}, "
                              f"received {sha256_file(path)}")
        return extract_cached(path, cache=cache)
    if path.is_dir():
        return path
    raise ExportError(f"cannot load an encoder from {text!r}: not a folder, an archive or an "
                      "http(s) URL (a zoo name is loaded with ssl3d_keras.load_encoder)")


def load_encoder(handle, input_channels=None, trainable=True, *, sha256=None, cache=None):
    """Load an exported encoder as a `keras.Model` (zoo names: `ssl3d_keras.load_encoder`).

    Args:
        handle: a preset folder, an export folder
            (`OUT` of `ssl3d export`, used only whole: its files must be those
            its `export.json` lists), a SavedModel folder, a `.tar.gz`, or an
            http(s) URL with its sha256 (`URL#sha256=<hex>` or `sha256=`).
        input_channels: int or None. If it differs from the encoder's channels,
            the first convolution is adapted with
            `ssl3d_keras.models.channels.adapt_input_channels`; the mapping is
            logged and kept as `model.channel_report`. Presets only.
        trainable: bool, sets `model.trainable`.
        sha256: hex digest of a downloaded (or local) archive.
        cache: cache folder (default `$SSL3D_CACHE` or `~/.cache/ssl3d`).

    Returns:
        A `keras.Model` `(batch, *spatial, C)` -> features. From a preset it is
        the original class (e.g. `UNetEncoder`, with `skips_model()`); from a
        SavedModel it wraps a `SavedModelLayer`. `model.ssl3d_metadata` holds the
        export's metadata.

    Raises:
        ExportError: unusable handle, checksum mismatch, unsafe archive, weights
            that do not match, an export folder that is not whole (interrupted,
            mixed, or from before `export.json`).

    Example:

    >>> from ssl3d_keras.export import load_encoder
    >>> encoder = load_encoder("exports/rot/hub.tar.gz")  # doctest: +SKIP
    """
    from ssl3d_keras.export.preset import load_preset
    from ssl3d_keras.export.savedmodel import read_saved_metadata

    folder = resolve_handle(handle, sha256=sha256, cache=cache)
    if not _is_preset(folder) and not _is_savedmodel(folder) and _is_export(folder):
        # An export folder is used only whole: its marker must list the part we load.
        marker = folder_lib.read_marker(folder)
        part = "preset" if "preset" in marker.get("formats", ()) else "savedmodel"
        folder_lib.verify_part(folder, part, marker)
    if _is_preset(folder):
        model, meta = load_preset(folder)
    elif _is_preset(folder / "preset"):
        model, meta = load_preset(folder / "preset")
    elif _is_savedmodel(folder) or _is_savedmodel(folder / "savedmodel"):
        folder = folder if _is_savedmodel(folder) else folder / "savedmodel"
        model, meta = savedmodel_as_model(folder, trainable=trainable), read_saved_metadata(folder)
    else:
        raise ExportError(f"{folder}: holds neither a preset (config.json + model.weights.h5) "
                          "nor a SavedModel (saved_model.pb)")
    report = None
    channels = int(model.inputs[0].shape[-1])
    if input_channels is not None and int(input_channels) != channels:
        if not _is_preset(folder) and not _is_preset(folder / "preset"):
            raise ExportError(f"{handle}: input_channels can only be adapted for a preset; the "
                              f"SavedModel takes {channels} channels. Received: "
                              f"input_channels={input_channels}")
        from ssl3d_keras.models.channels import adapt_input_channels

        model, report = adapt_input_channels(model, int(input_channels))
        logger.info("load_encoder(%s): %s", handle, report)
    model.trainable = trainable
    model.ssl3d_metadata = meta
    model.channel_report = report
    return model
