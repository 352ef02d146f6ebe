"""Export and loading: preset, SavedModel (TF Serving + TF Hub), archives, the Keras 3 layer.

Example:

>>> from ssl3d_keras.export import export_run, load_encoder
>>> export_run("runs/rot", "exports/rot")                       # doctest: +SKIP
>>> encoder = load_encoder("exports/rot/hub.tar.gz")            # doctest: +SKIP
"""

from ssl3d_keras.export.exporter import FORMATS, export_encoder, export_run
from ssl3d_keras.export.layer import SavedModelLayer
from ssl3d_keras.export.loader import load_encoder
from ssl3d_keras.export.preset import load_preset, save_preset
from ssl3d_keras.export.savedmodel import save_savedmodel

__all__ = [
    "FORMATS",
    "SavedModelLayer",
    "export_encoder",
    "export_run",
    "load_encoder",
    "load_preset",
    "save_preset",
    "save_savedmodel",
]
