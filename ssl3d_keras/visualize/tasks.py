"""One example of a proxy task, drawn so a person sees what the network is asked to do.

`task_panels` turns one `(inputs, target)` of a task's public `transform` into
a title and rows of captioned 2D images; `draw_task` renders them for a
phantom into a PNG. Per task:

- rotation: the original and the rotated volume and the class;
- jigsaw: the shuffled patches in grid layout and the permutation;
- rpl: the centre and the query patch and the query's cell offset;
- cpc: the grid of patches;
- exemplar: the augmented view and the original.

Display convention (as `ssl3d_keras.visualize.phantoms`): images are shown
with `origin="lower"`; a 3D volume as its axial, coronal and sagittal planes
through the centre; a 3D patch as its axial plane; a 2D image with axis 0 to
the right and axis 1 up. A grid of patches is laid out the same way: grid
axis 0 to the right, axis 1 up, and in 3D one block of columns per step along
axis 2 (inferior to superior, left to right). Channel 0 is drawn.
"""

import textwrap

import numpy as np

from ssl3d_keras.visualize.phantoms import orthogonal_slices, save_figure

# The transform does not depend on the encoder; a tiny one keeps drawing fast
# and accepts the small patches of a 64^3 phantom.
_DRAW_ENCODER = {"depth": 1, "base_filters": 2, "dropout": 0.0}


def volume_views(volume, prefix=""):
    """Captioned display planes of channel 0 of a `(D, H, W, C)` or `(H, W, C)` array."""
    volume = np.asarray(volume)[..., 0]
    if volume.ndim == 2:
        return [(f"{prefix}image", volume.T)]
    return [(f"{prefix}{name}", plane) for name, plane in orthogonal_slices(volume).items()]


def patch_view(patch):
    """The display plane of channel 0 of one patch: axial in 3D, the image in 2D."""
    patch = np.asarray(patch)[..., 0]
    return orthogonal_slices(patch)["axial"] if patch.ndim == 3 else patch.T


def patch_grid(patches, grid, caption):
    """Rows of `(caption(i), patch_view(patches[i]))` in the grid layout of the module docstring.

    Args:
        patches: array `(prod(grid), *patch, C)`, cells in raster order of `grid`.
        grid: tuple of `dim` ints, cells per axis.
        caption: function of the patch index `i`, returning its caption.
    """
    g0, g1, *rest = grid
    slabs = rest[0] if rest else 1
    return [
        [(caption(i), patch_view(patches[i]))
         for i2 in range(slabs) for i0 in range(g0)
         for i in [(i0 * g1 + i1) * slabs + i2]]
        for i1 in reversed(range(g1))
    ]


def _rotation(task, volume, inputs, target):
    title = (f"rotation: class {target} = {task.class_name(target)} of {task.num_classes} "
             f"(top: original, bottom: the input)")
    return title, [volume_views(volume, "original "), volume_views(inputs, "rotated ")]


def _jigsaw(task, volume, inputs, target):
    order = task.permutations[target].tolist()
    title = (f"jigsaw: class {target} of {task.num_permutations} permutations; slot i "
             f"holds cell order[i], order = {order}. Slots in grid layout:")
    return title, patch_grid(inputs, (task.grid,) * task.dim,
                             lambda i: f"slot {i} <- cell {order[i]}")


def _rpl(task, volume, inputs, target):
    title = (f"rpl: class {target} of {task.num_classes} = cell {task.query_cell(target)}, "
             f"offset {task.cell_offset(target)} cells from the centre "
             f"(top: centre, bottom: query)")
    return title, [volume_views(inputs[0], "centre "), volume_views(inputs[1], "query ")]


def _cpc(task, volume, inputs, target):
    grid = inputs.shape[: volume.ndim - 1]
    patches = inputs.reshape(-1, *inputs.shape[len(grid):])
    title = f"cpc: the {' x '.join(map(str, grid))} grid of patches"
    return title, patch_grid(patches, grid, lambda i: f"patch {i}")


def _exemplar(task, volume, inputs, target):
    title = "exemplar: augmented view (top) and original (bottom) of one scan"
    return title, [volume_views(inputs[0], "augmented "), volume_views(inputs[1], "original ")]


def _generic(task, volume, inputs, target):
    if inputs.shape == volume.shape:
        return f"{task.task_name}: target {target}", [volume_views(inputs, "input ")]
    return f"{task.task_name}: target {target}", [
        volume_views(x, f"input {i} ") for i, x in enumerate(inputs)
    ]


_DRAWERS = {"rotation": _rotation, "jigsaw": _jigsaw, "rpl": _rpl, "cpc": _cpc,
            "exemplar": _exemplar}


def task_panels(task, volume, seed=0, training=True):
    """What `draw_task` shows: one example of `task` made from `volume`.

    Args:
        task: a `ProxyTask`.
        volume: float32 array `(D, H, W, C)` or `(H, W, C)`.
        seed: int; `transform` gets the seed `[seed, 0]`.
        training: bool, passed to `transform`. Default `True`.

    Returns:
        `(title, rows)`: a str, and a list of rows, each a list of
        `(caption, 2D float array)`.
    """
    import tensorflow as tf

    volume = np.asarray(volume, np.float32)
    inputs, target = task.transform(
        tf.constant(volume), tf.constant([seed, 0], tf.int32), training=training
    )
    target = np.asarray(target).tolist()
    drawer = _DRAWERS.get(task.task_name, _generic)
    return drawer(task, volume, np.asarray(inputs), target)


def render_panels(title, rows, out_png):
    """Write `(title, rows)` of `task_panels` as a grey-scale PNG, one colour scale throughout.

    Returns:
        `Path` written (atomically).
    """
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    images = [image for row in rows for _, image in row]
    low = min(float(np.min(i)) for i in images)
    high = max(float(np.max(i)) for i in images)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.7 * n_cols + 0.4, 1.8 * n_rows + 0.9),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, row in enumerate(rows):
        for c, (caption, image) in enumerate(row):
            axes[r, c].imshow(image, cmap="gray", origin="lower", vmin=low, vmax=high,
                              interpolation="nearest")
            axes[r, c].set_title(caption, fontsize=7)
    fig.suptitle(textwrap.fill(title, width=int(20 * n_cols) + 30), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_png, dpi=100)


def draw_task(task_name, out_png, *, dim=3, size=64, channels=1, seed=0):
    """Draw one example of proxy task `task_name` on a synthetic phantom.

    The task is built with its default arguments around a tiny encoder (the
    example does not depend on the encoder), on the phantom `make_phantom(seed)`.

    Args:
        task_name: str, a registered task (`ssl3d_keras.tasks.list_tasks()`).
        out_png: path of the PNG to write (parent folders are created).
        dim: int, 3 (volume) or 2 (image). Default 3.
        size: int, side of the phantom. Default 64.
        channels: int, phantom channels; channel 0 is drawn. Default 1.
        seed: int, seed of the phantom and of the example. Default 0.

    Returns:
        `Path` of the written PNG.

    Raises:
        ConfigError: unknown task name, or a phantom too small for the task.

    Example:

    >>> from ssl3d_keras.visualize.tasks import draw_task
    >>> draw_task("jigsaw", "jigsaw.png", size=64)
    PosixPath('jigsaw.png')
    """
    from ssl3d_keras import tasks
    from ssl3d_keras.data.phantoms import make_phantom

    cls = tasks.get_class(task_name)
    image, _ = make_phantom(seed, size=size, channels=channels, dim=dim)
    task = cls(input_shape=image.shape, encoder=dict(_DRAW_ENCODER))
    title, rows = task_panels(task, image, seed=seed)
    return render_panels(title, rows, out_png)
