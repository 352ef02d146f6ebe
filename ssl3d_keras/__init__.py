"""ssl3d-keras: 3D self-supervised pretraining for medical imaging in Keras 3.

The five proxy tasks of Taleb et al., "3D Self-Supervised Methods for Medical
Imaging" (NeurIPS 2020), each in 3D and 2D: contrastive predictive coding
(`cpc`), rotation prediction (`rotation`), jigsaw puzzles (`jigsaw`), relative
patch location (`rpl`) and exemplar networks (`exemplar`).

Heavy modules (TensorFlow) are imported on first use, so `import ssl3d_keras`
and the CLI start fast.
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "tasks": "ssl3d_keras.tasks",
    "models": "ssl3d_keras.models",
    "data": "ssl3d_keras.data",
    "ops": "ssl3d_keras.ops",
    "training": "ssl3d_keras.training",
    "export": "ssl3d_keras.export",
    "zoo": "ssl3d_keras.zoo",
    # The front door: zoo names, export folders, archives and URLs.
    "load_encoder": "ssl3d_keras.zoo.builder:load_encoder",
}


def __getattr__(name):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'ssl3d_keras' has no attribute '{name}'")
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def __dir__():
    return sorted([*globals(), *_LAZY])
