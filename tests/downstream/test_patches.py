"""Training patches: aligned image and label, foreground-centred share, seeded and resumable."""

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.downstream.patches import foreground_crop, label_lookup, segmentation_batches
from ssl3d_keras.errors import ConfigError


def _volume(shape=(20, 24, 28), spot=(15, 3, 22)):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(*shape, 2)).astype(np.float32)
    label = np.zeros(shape, np.int32)
    label[spot] = 3  # one foreground voxel: a uniform crop rarely holds it
    return image, label


def _find(big, small):
    """Corner of `small` (a window of `big`) in `big`."""
    for corner in np.ndindex(*(b - s + 1 for b, s in zip(big.shape, small.shape, strict=False))):
        window = big[tuple(slice(c, c + s) for c, s in zip(corner, small.shape, strict=False))]
        if np.array_equal(window, small):
            return corner
    raise AssertionError("not a window")


def test_image_and_label_are_the_same_window():
    image, label = _volume()
    label = np.arange(label.size, dtype=np.int32).reshape(label.shape) % 7
    for seed in range(5):
        img, lab = foreground_crop(image, label, (8, 8, 8), tf.constant([seed, 1]))
        corner = _find(image[..., 0], img.numpy()[..., 0])
        window = tuple(slice(c, c + 8) for c in corner)
        np.testing.assert_array_equal(lab.numpy(), label[window])


def test_foreground_share_one_always_holds_the_foreground():
    image, label = _volume()
    for seed in range(20):
        _, lab = foreground_crop(image, label, (8, 8, 8), tf.constant([seed, 0]),
                                 foreground_share=1.0)
        assert (lab.numpy() == 3).sum() == 1


def test_foreground_share_zero_is_uniform_and_rarely_holds_it():
    image, label = _volume()
    hits = sum(int((foreground_crop(image, label, (8, 8, 8), tf.constant([s, 0]),
                                    foreground_share=0.0)[1].numpy() == 3).any())
               for s in range(40))
    assert hits < 20  # a single voxel is inside about 10 % of uniform 8^3 crops here


def test_same_seed_same_patch_and_small_volumes_are_padded():
    image, label = _volume(shape=(6, 24, 28), spot=(2, 10, 10))
    a = foreground_crop(image, label, (8, 16, 16), tf.constant([3, 4]))
    b = foreground_crop(image, label, (8, 16, 16), tf.constant([3, 4]))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    assert a[0].shape == (8, 16, 16, 2) and a[1].shape == (8, 16, 16)


def test_label_lookup_maps_and_backgrounds_the_rest():
    table = label_lookup({"4": 1, "11": 2}, 16)
    assert table[4] == 1 and table[11] == 2 and table[3] == 0
    assert label_lookup(None) is None
    with pytest.raises(ConfigError, match="label_map"):
        label_lookup({"300": 1}, 256)


def test_segmentation_batches_resume_exactly():
    volumes = []
    for i in range(3):
        image, label = _volume(spot=(5 + i, 5, 5))
        volumes.append({"image": image, "label": label, "case_id": f"c{i}"})
    dataset = tf.data.Dataset.from_tensor_slices(
        {k: np.stack([v[k] for v in volumes]) for k in ("image", "label", "case_id")})
    full = list(segmentation_batches(dataset, patch_size=(8, 8, 8), batch_size=2,
                                     seed=5).take(4).as_numpy_iterator())
    resumed = list(segmentation_batches(dataset, patch_size=(8, 8, 8), batch_size=2, seed=5,
                                        start_batch=2).take(2).as_numpy_iterator())
    for (image_a, label_a), (image_b, label_b) in zip(full[2:], resumed, strict=True):
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(label_a, label_b)
    assert full[0][0].shape == (2, 8, 8, 8, 2) and full[0][1].dtype == np.int32
