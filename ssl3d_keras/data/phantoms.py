"""Synthetic head phantoms: the embedded default data set.

A phantom is a head-like volume in the canonical RAS voxel order (axis 0 runs
left -> right, axis 1 posterior -> anterior, axis 2 inferior -> superior):
skin and skull shells around a brain with ventricles, two deep nuclei (the
left one larger), a superior sinus at the top, eyes at the front, a
cerebellum at the back-bottom and a brainstem below the centre. The layout is fixed and asymmetric along every
axis, so position and orientation are learnable and a 90-degree rotation is
detectable; each case varies only by a small pose change (a few degrees,
about +-10 % scale), textures, a smooth multiplicative bias field, Rician noise
and, in some cases, lesions of varying size and contrast inside the brain.

Channels are different contrasts of the same anatomy (T1-like, T2-like,
FLAIR-like, PD-like, then seeded random contrasts), as in multi-sequence MRI.
A 2D phantom (`dim=2`) is the coronal plane through the head's centre
(axis 0 left -> right, axis 1 inferior -> superior), made by the same code.

Everything is vectorised numpy on coordinate grids: a 64^3 phantom takes a
few tens of milliseconds.
"""

from pathlib import Path

import numpy as np

from ssl3d_keras.atomic import atomic_path, write_json_atomic
from ssl3d_keras.errors import ConfigError

PHANTOM_LABELS = {
    0: "background",
    1: "skin",
    2: "skull",
    3: "brain",
    4: "ventricles",
    5: "left nucleus",
    6: "right nucleus",
    7: "superior sinus",
    8: "eyes",
    9: "cerebellum",
    10: "brainstem",
    11: "lesion",
}
LESION_LABEL = max(PHANTOM_LABELS)

# Contrast names of the first channels; further channels get seeded random contrasts.
CHANNEL_NAMES = ("T1-like", "T2-like", "FLAIR-like", "PD-like")

# Mean intensity of each label (rows, in PHANTOM_LABELS order) in each named contrast.
_INTENSITY = np.array(
    [
        # T1    T2    FLAIR  PD
        [0.00, 0.00, 0.00, 0.00],  # background
        [0.55, 0.35, 0.45, 0.60],  # skin
        [0.12, 0.08, 0.10, 0.15],  # skull
        [0.72, 0.45, 0.55, 0.70],  # brain
        [0.18, 0.95, 0.10, 0.85],  # ventricles (CSF)
        [0.50, 0.60, 0.68, 0.75],  # left nucleus
        [0.42, 0.68, 0.60, 0.80],  # right nucleus
        [0.90, 0.25, 0.80, 0.55],  # superior sinus
        [0.15, 0.90, 0.20, 0.88],  # eyes (fluid)
        [0.62, 0.55, 0.48, 0.66],  # cerebellum
        [0.56, 0.60, 0.40, 0.72],  # brainstem
        [0.35, 0.88, 0.95, 0.85],  # lesion (fully developed; blended by its contrast)
    ],
    dtype=np.float32,
)
# Relative texture amplitude per label: (fine-grained, coarse).
_TEXTURE = np.array(
    [[0.0, 0.0], [0.05, 0.05], [0.15, 0.05], [0.06, 0.08], [0.02, 0.02], [0.10, 0.03],
     [0.03, 0.10], [0.02, 0.02], [0.02, 0.02], [0.18, 0.04], [0.03, 0.03],
     [0.10, 0.10]],
    dtype=np.float32,
)

# Ellipsoids in normalised head coordinates (x right, y anterior, z superior; the field of
# view spans [-1, 1] on each axis), painted in this order so later ones overwrite.
# (label, centre, semi-axes)
_HEAD = ((0.0, 0.0, -0.02), (0.80, 0.90, 0.86))
_STRUCTURES = (
    (1, *_HEAD),
    (2, _HEAD[0], tuple(0.93 * r for r in _HEAD[1])),
    (3, _HEAD[0], tuple(0.85 * r for r in _HEAD[1])),
    (9, (0.0, -0.50, -0.45), (0.42, 0.22, 0.20)),
    (10, (0.0, -0.12, -0.50), (0.10, 0.13, 0.24)),
    (4, (-0.10, -0.06, 0.08), (0.10, 0.34, 0.12)),
    (4, (0.10, -0.06, 0.08), (0.07, 0.30, 0.10)),
    (5, (-0.36, 0.05, -0.05), (0.13, 0.20, 0.14)),
    (6, (0.33, 0.05, -0.05), (0.09, 0.14, 0.10)),
    (7, (0.0, -0.10, 0.62), (0.06, 0.40, 0.06)),
    (8, (-0.28, 0.78, -0.30), (0.11, 0.11, 0.11)),
    (8, (0.28, 0.78, -0.30), (0.11, 0.11, 0.11)),
)
# Labels a lesion may grow in.
_LESION_HOSTS = (3, 5, 6, 9, 10)


def _as_shape(size, dim):
    if dim not in (2, 3):
        raise ConfigError("dim", f"phantoms are 2D or 3D. Received: dim={dim!r}")
    shape = (int(size),) * dim if np.isscalar(size) else tuple(int(s) for s in size)
    if len(shape) != dim or min(shape) < 8:
        raise ConfigError(
            "size", f"expected one int >= 8 or {dim} of them for dim={dim}. Received: size={size!r}"
        )
    return shape


def channel_intensities(channels):
    """Mean intensity of each label in each channel.

    Args:
        channels: int, number of channels.

    Returns:
        float32 array `(len(PHANTOM_LABELS), channels)`.
    """
    if int(channels) < 1:
        raise ConfigError("channels", f"expected an int >= 1. Received: channels={channels!r}")
    columns = [_INTENSITY[:, c] for c in range(min(channels, len(CHANNEL_NAMES)))]
    for c in range(len(CHANNEL_NAMES), channels):
        extra = np.random.default_rng(1000 + c).uniform(0.1, 1.0, len(PHANTOM_LABELS))
        extra[0] = 0.0
        columns.append(extra.astype(np.float32))
    return np.stack(columns, axis=1)


def channel_names(channels):
    """Names of the contrasts of `channels` phantom channels, e.g. `["T1-like", "T2-like"]`."""
    return [CHANNEL_NAMES[c] if c < len(CHANNEL_NAMES) else f"contrast-{c}" for c in range(channels)]


def _rotation(angles):
    """3x3 rotation matrix from small angles (radians) about x, y and z."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_noise(rng, shape, cells):
    """Unit-variance smooth random field: Gaussian noise on a grid `cells` voxels apart,
    linearly interpolated one axis at a time."""
    field = rng.standard_normal([max(2, -(-s // cells) + 1) for s in shape], dtype=np.float32)
    for axis, n in enumerate(shape):
        n_in = field.shape[axis]
        position = np.linspace(0, n_in - 1, n, dtype=np.float32)
        low = np.minimum(position.astype(int), n_in - 2)
        frac = (position - low).reshape([-1 if a == axis else 1 for a in range(len(shape))])
        below, above = np.take(field, low, axis=axis), np.take(field, low + 1, axis=axis)
        field = below + frac * (above - below)
    return (field - field.mean()) / (field.std() + 1e-6)


def make_phantom(seed, *, size=64, channels=1, dim=3):
    """One synthetic head phantom and its label map, deterministic from `seed`.

    Args:
        seed: int or sequence of ints (e.g. `(dataset_seed, case_index)`); the
            same seed always gives the same phantom.
        size: int or tuple of `dim` ints >= 8, the spatial shape. Default 64.
        channels: int, number of contrasts (T1-like, T2-like, FLAIR-like,
            PD-like, then random ones). Default 1.
        dim: 3 for a volume, 2 for the coronal plane through the centre.

    Returns:
        `(image, label)`: image float32 `(*size, channels)` (3D: `(D, H, W, C)`
        in RAS voxel order), label int32 `(*size)` with values in
        `PHANTOM_LABELS` (the last label, "lesion", is present in some cases only).

    Example:

    >>> image, label = make_phantom(0, size=32, channels=2)
    >>> image.shape, label.shape
    ((32, 32, 32, 2), (32, 32, 32))
    """
    shape = _as_shape(size, dim)
    intensity = channel_intensities(channels)
    rng = np.random.default_rng(seed)

    # Pose: a few degrees of rotation, +-10 % scale, a small shift. Never a 90-degree turn,
    # so the rotation proxy task stays well posed. 2D rotates only within its (x, z) plane.
    if dim == 3:
        angles = rng.uniform(-5, 5, 3) * np.pi / 180
        shift = rng.uniform(-0.04, 0.04, 3)
    else:
        angles = np.array([0.0, rng.uniform(-5, 5) * np.pi / 180, 0.0])
        shift = np.array([rng.uniform(-0.04, 0.04), 0.0, rng.uniform(-0.04, 0.04)])
    scale = rng.uniform(0.9, 1.1) * rng.uniform(0.98, 1.02, 3)
    inverse = (_rotation(angles).T / scale[:, None]).astype(np.float32)

    # Scanner-frame coordinates of the voxel centres in [-1, 1]; a 2D phantom is the y = 0 plane.
    axes = [(np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1 for n in shape]
    grids = np.meshgrid(*axes, indexing="ij", sparse=True)
    zero = np.zeros((1,) * dim, np.float32)
    world = grids if dim == 3 else [grids[0], zero, grids[1]]
    world = [w - np.float32(t) for w, t in zip(world, shift, strict=True)]
    # Head coordinates of each voxel: inverse pose applied to the scanner coordinates.
    head = [sum(inverse[i, j] * world[j] for j in range(3)) for i in range(3)]

    label = np.zeros(shape, np.int32)
    forward = np.linalg.inv(inverse)  # head -> (shifted) scanner coordinates
    world_axes = (0, 1, 2) if dim == 3 else (0, 2)  # scanner axis of each array axis
    # The shells share one size jitter so they stay nested; inner structures vary on their own.
    shell_jitter = rng.uniform(0.97, 1.03, 3)
    for value, centre, radii in _STRUCTURES:
        semi = np.array(radii) * (shell_jitter if value in (1, 2, 3) else rng.uniform(0.92, 1.08, 3))
        # Only the voxels in the bounding box of the structure's circumscribed sphere are tested.
        centre_world = forward @ np.array(centre) + shift
        reach = semi.max() * scale.max()
        if dim == 2 and abs(centre_world[1]) > reach:
            continue
        box = []
        for n, w in zip(shape, world_axes, strict=True):
            low = int(np.floor((centre_world[w] - reach + 1) * n / 2 - 0.5))
            high = int(np.ceil((centre_world[w] + reach + 1) * n / 2 - 0.5)) + 1
            box.append(slice(max(low, 0), max(min(high, n), 0)))
        box = tuple(box)
        r2 = sum(((h[box] - c) / r) ** 2 for h, c, r in zip(head, centre, semi, strict=True))
        label[box][r2 <= 1.0] = value

    fine = _smooth_noise(rng, shape, cells=3)
    coarse = _smooth_noise(rng, shape, cells=10)

    lesions = []
    if rng.uniform() < 0.6:
        hosts = np.flatnonzero(np.isin(label, _LESION_HOSTS))
        for _ in range(rng.integers(1, 4)):
            centre = np.unravel_index(rng.choice(hosts), shape)
            radius = rng.uniform(0.03, 0.14)
            d2 = sum(
                ((np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1 - a[c]).reshape(
                    [-1 if k == i else 1 for k in range(dim)]) ** 2
                for i, (n, a, c) in enumerate(zip(shape, axes, centre, strict=True))
            )
            # Irregular border: the coarse texture modulates the radius.
            mask = (np.sqrt(d2) <= radius * (1 + 0.25 * coarse)) & np.isin(label, _LESION_HOSTS)
            lesions.append((mask, rng.uniform(0.35, 1.0)))
            label[mask] = LESION_LABEL

    # Per-case jitter of the contrasts (+-5 %), then texture, lesion blend, bias field, noise.
    means = intensity * rng.uniform(0.95, 1.05, intensity.shape).astype(np.float32)
    texture = 1 + _TEXTURE[label, 0] * fine + _TEXTURE[label, 1] * coarse
    image = means[label] * texture[..., None]
    for mask, contrast in lesions:
        host = image[mask]
        image[mask] = host + contrast * (means[LESION_LABEL] * texture[mask][:, None] - host)

    basis = world if dim == 3 else [world[0], world[2]]
    for c in range(channels):
        linear = sum(np.float32(rng.normal(0, 0.12)) * b for b in basis)
        quadratic = sum(np.float32(rng.normal(0, 0.08)) * b * b for b in basis)
        image[..., c] *= np.exp(np.broadcast_to(linear + quadratic, shape))

    sigma = np.float32(rng.uniform(0.01, 0.04))
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.sqrt(real * real + imaginary * imaginary)  # Rician magnitude noise
    return image.astype(np.float32, copy=False), label


def phantom_affine(shape):
    """RAS affine with 1 mm isotropic voxels and the world origin at the volume centre."""
    affine = np.eye(4)
    affine[:3, 3] = [-(n - 1) / 2 for n in shape]
    return affine


def write_phantom_dataset(out_dir, n, *, size=64, channels=1, seed=0, dim=3, callback=None):
    """Write `n` phantoms as a Medical Segmentation Decathlon dataset.

    Layout: `dataset.json`, `imagesTr/phantom_000.nii.gz` (float32; 4D
    `(X, Y, Z, C)` when `channels > 1`), `labelsTr/phantom_000.nii.gz` (uint8),
    RAS affine with 1 mm isotropic spacing. Case `i` is
    `make_phantom((seed, i), ...)`, the same volume `phantom_volumes` yields.
    A 2D phantom is stored as a single-slice volume `(X, Z, 1[, C])`.
    Every file is written under a temporary name and renamed when complete.

    Args:
        out_dir: folder to create or fill.
        n: int >= 1, number of cases.
        size, channels, dim: as in `make_phantom`.
        seed: int, data set seed.
        callback: optional `callback(index, image_path)` called after each case
            (the CLI drives its progress bar with it).

    Returns:
        `Path` of the data set folder.

    Raises:
        ConfigError: `n`, `size`, `channels` or `dim` is invalid.
    """
    if int(n) < 1:
        raise ConfigError("n", f"expected at least one phantom. Received: n={n!r}")
    shape = _as_shape(size, dim)
    names = channel_names(int(channels))
    import nibabel as nib

    out = Path(out_dir)
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = phantom_affine(shape if dim == 3 else (*shape, 1))
    training = []
    for i in range(int(n)):
        image, label = make_phantom((seed, i), size=shape, channels=channels, dim=dim)
        if dim == 2:
            image, label = image[:, :, None, :], label[:, :, None]
        if channels == 1:
            image = image[..., 0]
        case = f"phantom_{i:03d}.nii.gz"
        image_nii = nib.Nifti1Image(image, affine)
        image_nii.header.set_xyzt_units("mm")
        label_nii = nib.Nifti1Image(label.astype(np.uint8), affine)
        label_nii.header.set_xyzt_units("mm")
        for nii, folder in ((image_nii, "imagesTr"), (label_nii, "labelsTr")):
            with atomic_path(out / folder / case) as tmp:
                nib.save(nii, str(tmp))
        training.append({"image": f"./imagesTr/{case}", "label": f"./labelsTr/{case}"})
        if callback is not None:
            callback(i, out / "imagesTr" / case)
    description = {
        "name": "ssl3d-phantoms",
        "description": (
            f"Synthetic head phantoms from ssl3d-keras (seed {seed}, size {list(shape)}, dim {dim})"
        ),
        "reference": "ssl3d_keras.data.phantoms.make_phantom",
        "licence": "CC0",
        "release": "1.0",
        "tensorImageSize": "4D" if channels > 1 else "3D",
        "modality": {str(c): name for c, name in enumerate(names)},
        "labels": {str(k): v for k, v in PHANTOM_LABELS.items()},
        "numTraining": int(n),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    write_json_atomic(out / "dataset.json", description)
    return out
