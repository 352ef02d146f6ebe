"""Figures of phantoms: orthogonal slices of each channel with the label overlay.

Also the small helpers other figures share: `orthogonal_slices` (display-ready
axial/coronal/sagittal planes of an RAS volume), `label_colormap` and
`save_figure` (atomic PNG write). Matplotlib runs on the Agg backend.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ssl3d_keras.atomic import atomic_path  # noqa: E402
from ssl3d_keras.data.phantoms import PHANTOM_LABELS, channel_names, make_phantom  # noqa: E402

# One fixed colour per phantom label (background transparent), lesion in red.
LABEL_COLORS = (
    (0, 0, 0, 0), "#f2c48d", "#c8c8c8", "#4f8fd6", "#37c8e6", "#59b34d", "#b8d64a",
    "#a05acd", "#f0e442", "#e67e22", "#d98cb3", "#ff1a1a",
)


def label_colormap(n_labels=len(PHANTOM_LABELS)):
    """`ListedColormap` mapping label k to a fixed colour (0 transparent)."""
    colors = [LABEL_COLORS[k % len(LABEL_COLORS)] if k < len(LABEL_COLORS)
              else plt.cm.tab20(k % 20) for k in range(n_labels)]
    return ListedColormap(colors)


def orthogonal_slices(volume, center=None):
    """Axial, coronal and sagittal planes of an RAS volume, ready for `imshow(origin="lower")`.

    Args:
        volume: array `(D, H, W)` or `(D, H, W, C)` in RAS voxel order (axis 0
            left -> right, 1 posterior -> anterior, 2 inferior -> superior).
        center: optional voxel index `(x, y, z)` the planes pass through;
            default the centre.

    Returns:
        dict `{"axial", "coronal", "sagittal"}` of 2D arrays (trailing channel
        axis kept). Shown with `origin="lower"`: axial has right to the right
        and anterior up, coronal right to the right and superior up, sagittal
        anterior to the right and superior up.
    """
    volume = np.asarray(volume)
    x, y, z = [s // 2 for s in volume.shape[:3]] if center is None else center
    planes = {"axial": volume[:, :, z], "coronal": volume[:, y, :], "sagittal": volume[x, :, :]}
    return {name: np.swapaxes(plane, 0, 1) for name, plane in planes.items()}


def save_figure(fig, path, *, dpi=110):
    """Save `fig` to `path` atomically (temp file in the same folder, then rename) and close it.

    The format comes from the extension (e.g. `.png`, `.pdf`).

    Returns:
        `Path` written.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def label_legend(fig, labels=PHANTOM_LABELS, present=None):
    """A colour legend of label names along the bottom of `fig`."""
    cmap = label_colormap(max(labels) + 1)
    handles = [Patch(facecolor=cmap(k), edgecolor="black", linewidth=0.5, label=f"{k} {name}")
               for k, name in labels.items() if k > 0 and (present is None or k in present)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8,
               frameon=False, bbox_to_anchor=(0.5, 0.0))


def _planes(array, dim):
    if dim == 3:
        return orthogonal_slices(array)
    return {"coronal": np.swapaxes(np.asarray(array), 0, 1)}


def draw_phantoms(out_png, *, n=3, size=64, channels=1, dim=3, seed=0):
    """Draw `n` phantoms: one row per phantom and channel, planes without and with labels.

    Case `i` is `make_phantom((seed, i), ...)` (the data set's `phantom_00i`).

    Args:
        out_png: path of the image to write.
        n: int, number of phantoms. Default 3.
        size, channels, dim: as in `make_phantom`.
        seed: int, data set seed.

    Returns:
        `Path` written.
    """
    names = channel_names(channels)
    cases = [make_phantom((seed, i), size=size, channels=channels, dim=dim) for i in range(n)]
    n_planes = 3 if dim == 3 else 1
    rows, cols = n * channels, 2 * n_planes
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.2 * rows + 0.6), squeeze=False)
    cmap = label_colormap()
    present = set()
    for i, (image, label) in enumerate(cases):
        present |= set(np.unique(label).tolist())
        label_planes = _planes(label, dim)
        for c in range(channels):
            row = axes[i * channels + c]
            image_planes = _planes(image[..., c], dim)
            vmax = float(np.percentile(image[..., c], 99.5))
            for p, (plane, data) in enumerate(image_planes.items()):
                for k, ax in enumerate((row[p], row[n_planes + p])):
                    ax.imshow(data, cmap="gray", origin="lower", vmin=0, vmax=vmax,
                              interpolation="nearest")
                    if k == 1:
                        overlay = np.ma.masked_equal(label_planes[plane], 0)
                        ax.imshow(overlay, cmap=cmap, origin="lower", vmin=-0.5,
                                  vmax=len(PHANTOM_LABELS) - 0.5, alpha=0.55,
                                  interpolation="nearest")
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if i == 0 and c == 0:
                        ax.set_title(plane + (" + labels" if k else ""), fontsize=9)
            row[0].set_ylabel(f"phantom_{i:03d}\n{names[c]}", fontsize=9)
    label_legend(fig, present=present)
    fig.suptitle(f"ssl3d phantoms ({dim}D, size {size}, seed {seed}); "
                 "planes through the centre, R right, superior/anterior up", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return save_figure(fig, out_png)
