"""Drawing one example of each task: what the panels show, and that a PNG is written."""

import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras import tasks
from ssl3d_keras.data.phantoms import make_phantom
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.visualize.tasks import draw_task, task_panels
from tests.tasks.test_rotation import paper_rotations

TINY = {"depth": 1, "base_filters": 2, "dropout": 0.0}
CASES = [(name, dim) for name in tasks.list_tasks() for dim in (3, 2)]


def shown(array):
    """Independent reference of the display planes: RAS axial/coronal/sagittal, or the 2D image."""
    a = np.asarray(array)[..., 0]
    if a.ndim == 2:
        return [a.T]
    x, y, z = (s // 2 for s in a.shape)
    return [a[:, :, z].T, a[:, y, :].T, a[x, :, :].T]


def example(task, volume, seed):
    inputs, target = task.transform(tf.constant(volume), tf.constant([seed, 0]), training=True)
    return inputs.numpy(), int(target)


def images(row):
    return [image for _, image in row]


@pytest.mark.parametrize(("name", "dim"), CASES, ids=[f"{n}-{d}d" for n, d in CASES])
def test_draw_task_writes_a_png(name, dim, tmp_path):
    out = draw_task(name, tmp_path / "sub" / f"{name}.png", dim=dim, size=48, seed=1)
    assert out == tmp_path / "sub" / f"{name}.png"
    picture = matplotlib.image.imread(out)
    assert picture.shape[0] > 100 and picture.shape[1] > 100
    assert picture[..., :3].std() > 0.05, "the picture is blank"
    assert [p.name for p in out.parent.iterdir()] == [out.name], "a temporary file was left"


@pytest.mark.parametrize("dim", [3, 2])
def test_rotation_shows_original_and_rotated(dim):
    volume, _ = make_phantom(0, size=16, dim=dim)
    task = tasks.get("rotation", input_shape=volume.shape, encoder=TINY)
    for seed in range(3):
        title, rows = task_panels(task, volume, seed=seed)
        _, label = example(task, volume, seed)
        assert f"class {label} = {task.class_name(label)}" in title
        assert len(rows) == 2 and len(rows[0]) == (3 if dim == 3 else 1)
        for got, want in zip(images(rows[0]), shown(volume), strict=True):
            np.testing.assert_array_equal(got, want)
        rotated = paper_rotations(volume)[label]
        for got, want in zip(images(rows[1]), shown(rotated), strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dim", [3, 2])
def test_jigsaw_shows_each_slot_in_grid_layout(dim):
    volume, _ = make_phantom(0, size=24, dim=dim)
    task = tasks.get("jigsaw", input_shape=volume.shape, encoder=TINY, num_permutations=10)
    title, rows = task_panels(task, volume, seed=2)
    inputs, label = example(task, volume, 2)
    order = task.permutations[label]
    assert str(order.tolist()) in title
    assert len(rows) == 3 and all(len(r) == 3 ** (dim - 1) for r in rows)
    for r, row in enumerate(rows):
        for c, (caption, image) in enumerate(row):
            i0, i1, i2 = c % 3, 2 - r, c // 3  # axis 0 right, axis 1 up, axis-2 blocks
            i = int(np.ravel_multi_index((i0, i1, i2)[:dim], (3,) * dim))
            assert caption == f"slot {i} <- cell {order[i]}"
            patch = inputs[i][..., 0]
            want = patch[:, :, patch.shape[2] // 2].T if dim == 3 else patch.T
            np.testing.assert_array_equal(image, want)


def test_rpl_shows_centre_query_and_offset():
    volume, _ = make_phantom(0, size=24)
    task = tasks.get("rpl", input_shape=volume.shape, encoder=TINY)
    title, rows = task_panels(task, volume, seed=4)
    inputs, label = example(task, volume, 4)
    assert f"offset {task.cell_offset(label)} cells" in title
    for row, patch in zip(rows, inputs, strict=True):
        for got, want in zip(images(row), shown(patch), strict=True):
            np.testing.assert_array_equal(got, want)


def test_unknown_task_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'jigsaw'"):
        draw_task("jigsw", tmp_path / "x.png")
