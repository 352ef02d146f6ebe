"""A CT-like Decathlon folder for the zoo tests: air at -1000 HU around a soft-tissue body."""

import json
from pathlib import Path

import numpy as np

from tests.data.helpers_nifti import write_nifti

AIR = -1000.0


def write_ct_decathlon(root, rng, *, n=3, shape=(40, 36, 24), air=AIR, body=0.45, channels=1):
    """A Decathlon folder of CT-like volumes: air around an ellipsoid body of soft tissue.

    `body` is the ellipsoid's semi-axis as a share of each edge; `air=0` stores the
    scan without its rescale intercept (air at 0 HU, the crop's -500 threshold keeps all).
    """
    root = Path(root)
    grid = np.stack(np.meshgrid(*[np.linspace(-0.5, 0.5, s) for s in shape], indexing="ij"))
    inside = (grid ** 2).sum(axis=0) / body ** 2 <= 1.0
    training = []
    for i in range(n):
        image = np.where(inside, 40.0, air) + rng.normal(0, 10, size=shape)
        if channels > 1:
            image = np.stack([image] * channels, axis=-1)
        name = f"pancreas_{i:03d}.nii.gz"
        write_nifti(root / "imagesTr" / name, image.astype(np.float32))
        write_nifti(root / "labelsTr" / name, inside.astype(np.uint8))
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "ct", "modality": {str(c): "CT" for c in range(channels)},
            "labels": {"0": "background", "1": "pancreas", "2": "cancer"},
            "numTraining": n, "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def add_unlabelled_case(root, source="pancreas_000", name="pancreas_100"):
    """Copy a case's image into imagesTs and list it under the dataset's `test` entries."""
    import shutil

    root = Path(root)
    (root / "imagesTs").mkdir(exist_ok=True)
    shutil.copy(root / "imagesTr" / f"{source}.nii.gz", root / "imagesTs" / f"{name}.nii.gz")
    meta = json.loads((root / "dataset.json").read_text())
    meta["test"] = [*meta.get("test", []), f"./imagesTs/{name}.nii.gz"]
    meta["numTest"] = len(meta["test"])
    (root / "dataset.json").write_text(json.dumps(meta))
    return root
