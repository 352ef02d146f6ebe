"""Writers of tiny NIfTI datasets in temp folders for the data tests (nibabel only)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np

# LAS voxel order (axis 0 runs right -> left), 2 x 3 x 4 mm voxels: loading must flip axis 0.
LAS_AFFINE = np.array([[-2.0, 0, 0, 30.0], [0, 3.0, 0, -20.0], [0, 0, 4.0, 5.0], [0, 0, 0, 1]])


def write_nifti(path, array, affine=None, *, dtype=None, slope=None, inter=None, nifti2=False):
    """Write `array` to `path` with nibabel; returns the path as str."""
    array = np.asarray(array)
    if dtype is not None:
        array = array.astype(dtype)
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    img = cls(array, np.eye(4) if affine is None else affine)
    img.header.set_data_dtype(array.dtype)
    if slope is not None:
        img.header.set_slope_inter(slope, inter or 0.0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return str(path)


def blob(rng, shape, labels=(0, 1, 2)):
    """(image float32 with a bright box on a zero background, label int with `labels`)."""
    image = np.zeros(shape, np.float32)
    label = np.zeros(shape, np.int16)
    centre = tuple(slice(s // 4, s - s // 4) for s in shape)
    image[centre] = 100.0 + rng.normal(0, 5, image[centre].shape)
    label[centre] = labels[1]
    inner = tuple(slice(s // 2 - 1, s // 2 + 1) for s in shape)
    label[inner] = labels[2]
    image[inner] += 50.0
    return image, label


def write_decathlon(root, n, rng, *, size=8, channels=2, affine=None, n_test=0):
    """Decathlon layout: dataset.json, imagesTr (4D when channels > 1), labelsTr.

    `n_test` unlabelled cases `case_{n + i:03d}` go to imagesTs and the "test" list.
    """
    root = Path(root)
    training, test = [], []
    for i in range(n + n_test):
        image, label = blob(rng, (size,) * 3)
        stack = np.stack([image * (c + 1) for c in range(channels)], axis=-1)
        name = f"case_{i:03d}.nii.gz"
        folder = "imagesTr" if i < n else "imagesTs"
        write_nifti(root / folder / name, stack if channels > 1 else image, affine)
        if i >= n:
            test.append(f"./imagesTs/{name}")
            continue
        write_nifti(root / "labelsTr" / name, label, affine)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "tiny", "modality": {str(c): f"mod{c}" for c in range(channels)},
            "labels": {"0": "background", "1": "organ", "2": "tumour"},
            "numTraining": n, "numTest": n_test, "training": training, "test": test}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def write_brats(root, n, rng, *, size=8, modalities=("t1", "t1ce", "t2", "flair"), ext=".nii.gz"):
    """BraTS layout: one folder per case, one file per modality and `_seg` with labels 0,1,2,4."""
    root = Path(root)
    for i in range(n):
        case = f"BraTS_{i:03d}"
        image, label = blob(rng, (size,) * 3, labels=(0, 1, 4))
        label[0, 0, 0] = 2
        for k, modality in enumerate(modalities):
            write_nifti(root / case / f"{case}_{modality}{ext}", image + 1000 * k)
        write_nifti(root / case / f"{case}_seg{ext}", label)
    return root
