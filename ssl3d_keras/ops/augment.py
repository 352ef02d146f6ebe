"""Random augmentations of one volume, N-d, graph-safe, with stateless seeds.

These are the 3D exemplar-network augmentations of the paper (Taleb et al.
2020, 3D-Exe; README, "The five tasks as built"), and the old code's 2D ones:
its 2D exemplar chain (`exemplar_augment_2d`, albumentations in the old code)
and its fundus zoom and flips (`fundus_augment`, the Keras `random_zoom` and
albumentations flips of its 2D data generators). Every random op takes
`(volume, seed)` with `volume` of shape `(*spatial, C)` (2 or 3 spatial axes)
and `seed` an int32 tensor `[2]`; the same seed gives the same output, in eager
mode, in a `tf.function` and in a `tf.data` map. Each op splits its seed, so
composing them stays reproducible.

Out-of-volume voxels (arbitrary-angle rotations, zooming out) take the value of
the nearest edge voxel, so no artificial border appears for the network to key on;
the fundus zoom keeps the old code's constant fill (a black border, as the
photographs' own background).
"""

import itertools
import math

import tensorflow as tf

from ssl3d_keras.ops.rotations import rot90


def _dim(volume, op):
    rank = volume.shape.rank
    if rank not in (3, 4):
        raise ValueError(
            f"{op} expects a volume (D, H, W, C) or an image (H, W, C). Received: shape={volume.shape}"
        )
    return rank - 1


def _split(seed, num):
    return tf.unstack(tf.random.experimental.stateless_split(seed, num))


def _uniform(shape, seed, low=0.0, high=1.0):
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high, dtype=tf.float32)


def random_flip(volume, seed, p=0.5):
    """Reverse each spatial axis independently with probability `p`.

    Args:
        volume: tensor `(*spatial, C)`.
        seed: int32 tensor `[2]`.
        p: float, probability of flipping each axis. Default 0.5.

    Returns:
        Tensor of the same shape.
    """
    volume = tf.convert_to_tensor(volume)
    dim = _dim(volume, "random_flip")
    flip = _uniform([dim], seed) < p
    for axis in range(dim):
        volume = tf.cond(
            flip[axis], lambda v=volume, a=axis: tf.reverse(v, [a]), lambda v=volume: v
        )
    return volume


def rotate_angle(volume, angle, axes):
    """Rotate a volume by `angle` radians in the plane `axes` (bilinear).

    The rotation is about the centre of the plane and turns the same way as
    `np.rot90(volume, 1, axes)` for `angle = pi / 2`. The output keeps the
    input shape; voxels from outside take the nearest edge value.

    Args:
        volume: float tensor `(*spatial, C)`.
        angle: float or scalar float tensor, radians.
        axes: pair of spatial axes `(a, b)`.

    Returns:
        Tensor of the same shape.
    """
    volume = tf.convert_to_tensor(volume)
    dim = _dim(volume, "rotate_angle")
    a, b = axes
    others = [axis for axis in range(dim) if axis not in (a, b)]
    perm = [*others, a, b, dim]
    moved = tf.transpose(volume, perm)
    shape = tf.shape(moved)
    height, width = shape[-3], shape[-2]
    images = tf.reshape(moved, tf.stack([-1, height, width, shape[-1]]))
    angle = tf.cast(angle, tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    # Output pixel (x, y) samples the input at R(angle) applied around the centre.
    transform = tf.stack(
        [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0]
    )
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32),
        transforms=transform[tf.newaxis],
        output_shape=tf.stack([height, width]),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )
    rotated = tf.cast(tf.reshape(rotated, shape), volume.dtype)
    inverse = [perm.index(axis) for axis in range(dim + 1)]
    return tf.ensure_shape(tf.transpose(rotated, inverse), volume.shape)


def random_rot90_or_angle(volume, seed, p=0.5, p_angle=0.5):
    """For each plane, rotate with probability `p` by 90/180/270 degrees or an arbitrary angle.

    Planes are taken in the order `itertools.combinations(range(dim), 2)`
    ((0, 1), (0, 2), (1, 2) in 3D). A rotated plane gets an arbitrary angle
    (uniform in `[0, 2 pi)`, bilinear) with probability `p_angle`, otherwise
    `k` quarter turns, `k` uniform in {1, 2, 3}. A plane whose two sizes differ
    only gets the half turn among the quarter turns, so the shape is kept.

    Args:
        volume: tensor `(*spatial, C)`.
        seed: int32 tensor `[2]`.
        p: float, probability of rotating each plane. Default 0.5.
        p_angle: float, probability that a rotation is by an arbitrary angle.
            Default 0.5.

    Returns:
        Tensor of the same shape.
    """
    volume = tf.convert_to_tensor(volume)
    dim = _dim(volume, "random_rot90_or_angle")
    planes = list(itertools.combinations(range(dim), 2))
    for plane, plane_seed in zip(planes, _split(seed, len(planes)), strict=True):
        u = _uniform([4], plane_seed)
        rotate, by_angle = u[0] < p, u[1] < p_angle
        sizes = [volume.shape[axis] for axis in plane]
        turns = (1, 2, 3) if sizes[0] is not None and sizes[0] == sizes[1] else (2,)
        k = tf.minimum(tf.cast(u[2] * len(turns), tf.int32), len(turns) - 1)
        angle = u[3] * (2.0 * math.pi)
        quarter = [lambda v=volume, t=t, pl=plane: rot90(v, t, pl) for t in turns]
        branch = tf.where(rotate, tf.where(by_angle, 2, 1), 0)
        volume = tf.switch_case(
            branch,
            [
                lambda v=volume: v,
                lambda q=quarter, k=k: tf.switch_case(k, q),
                lambda v=volume, a=angle, pl=plane: rotate_angle(v, a, pl),
            ],
        )
    return volume


def adjust_brightness_contrast(volume, delta, factor):
    """`(volume - mean) * factor + mean + delta`, with the mean per channel.

    Args:
        volume: float tensor `(*spatial, C)`.
        delta: float, brightness shift added to every voxel.
        factor: float, contrast factor around the channel mean.

    Returns:
        Tensor of the same shape.
    """
    volume = tf.convert_to_tensor(volume)
    dim = _dim(volume, "adjust_brightness_contrast")
    mean = tf.reduce_mean(volume, axis=list(range(dim)), keepdims=True)
    factor = tf.cast(factor, volume.dtype)
    # One grouped offset: graph-mode optimisers regroup `x + mean + delta` and
    # differ from eager in the last bit otherwise.
    return (volume - mean) * factor + (mean + tf.cast(delta, volume.dtype))


def random_brightness_contrast(volume, seed, brightness=0.125, contrast=(0.5, 1.5), p=0.5):
    """Random brightness shift and contrast change, each applied with probability `p`.

    Args:
        volume: float tensor `(*spatial, C)`.
        seed: int32 tensor `[2]`.
        brightness: float, the shift is uniform in `[-brightness, brightness]`.
            Default 0.125.
        contrast: pair of floats, range of the contrast factor around the
            channel mean. Default `(0.5, 1.5)`.
        p: float, probability of each of the two changes. Default 0.5.

    Returns:
        Tensor of the same shape.
    """
    u = _uniform([4], seed)
    delta = tf.where(u[0] < p, brightness * (2.0 * u[1] - 1.0), 0.0)
    factor = tf.where(u[2] < p, contrast[0] + (contrast[1] - contrast[0]) * u[3], 1.0)
    return adjust_brightness_contrast(volume, delta, factor)


def zoom(volume, factors, fill_value=None):
    """Zoom about the centre by `factors` per spatial axis, keeping the shape.

    Equivalent to resizing by `factors` (linear interpolation) and then
    centre-cropping or padding back to the input shape: output voxel `i`
    samples the input at `c + (i - c) / factor`, `c = (size - 1) / 2`.

    Args:
        volume: float tensor `(*spatial, C)`.
        factors: float tensor or sequence `(dim,)`; > 1 zooms in.
        fill_value: `None` (default): samples outside the input take the
            nearest edge value; a float: they take this value (Keras'
            `fill_mode="constant"`).

    Returns:
        Tensor of the same shape.
    """
    volume = tf.convert_to_tensor(volume)
    dim = _dim(volume, "zoom")
    factors = tf.cast(tf.convert_to_tensor(factors), tf.float32)
    for axis in range(dim):
        size = tf.shape(volume)[axis]
        last = tf.cast(size - 1, tf.float32)
        centre = last / 2.0
        coords = centre + (tf.cast(tf.range(size), tf.float32) - centre) / factors[axis]
        # A hair of slack: at factor 1 the edge voxels sit exactly on 0 and `last`.
        outside = (coords < -1e-4) | (coords > last + 1e-4)
        coords = tf.clip_by_value(coords, 0.0, last)
        low = tf.cast(tf.floor(coords), tf.int32)
        high = tf.minimum(low + 1, size - 1)
        weight = tf.cast(coords - tf.cast(low, tf.float32), volume.dtype)
        weight = tf.reshape(weight, [-1] + [1] * (dim - axis))
        volume = (1 - weight) * tf.gather(volume, low, axis=axis) + weight * tf.gather(
            volume, high, axis=axis
        )
        if fill_value is not None:
            outside = tf.reshape(outside, [-1] + [1] * (dim - axis))
            volume = tf.where(outside, tf.cast(fill_value, volume.dtype), volume)
    return volume


def random_zoom(volume, seed, zoom_range=(0.8, 1.2), p=0.15):
    """With probability `p`, zoom by a random factor per axis, then crop/pad back.

    Args:
        volume: float tensor `(*spatial, C)`.
        seed: int32 tensor `[2]`.
        zoom_range: pair of floats, range of the per-axis factor. Default
            `(0.8, 1.2)`.
        p: float, probability of zooming. Default 0.15.

    Returns:
        Tensor of the same shape (see `zoom`).
    """
    volume = tf.convert_to_tensor(volume)
    dim = _dim(volume, "random_zoom")
    u = _uniform([dim + 1], seed)
    factors = zoom_range[0] + (zoom_range[1] - zoom_range[0]) * u[1:]
    return tf.cond(u[0] < p, lambda: zoom(volume, factors), lambda: volume)


def exemplar_augment(volume, seed):
    """The 3D exemplar-network augmentation chain of the paper (old code's settings).

    Flip each axis (p 0.5) -> rotate each plane (p 0.5; a multiple of 90
    degrees or, half the time, an arbitrary angle) -> brightness +-0.125 and
    contrast 0.5-1.5 around the mean (p 0.5 each) -> zoom 0.8-1.2 per axis
    (p 0.15), cropped/padded back.

    Args:
        volume: float tensor `(*spatial, C)`.
        seed: int32 tensor `[2]`.

    Returns:
        Tensor of the same shape.
    """
    flip_seed, rot_seed, intensity_seed, zoom_seed = _split(seed, 4)
    volume = random_flip(volume, flip_seed)
    volume = random_rot90_or_angle(volume, rot_seed)
    volume = random_brightness_contrast(volume, intensity_seed)
    return random_zoom(volume, zoom_seed)


# --- the old code's 2D path ----------------------------------------------------------------


def random_quarter_turn(image, seed):
    """Rotate an image by `k` quarter turns in the plane of its two axes, `k` uniform in 0..3.

    albumentations' `RandomRotate90` (the old 2D exemplar chain), the same way
    round as `np.rot90(image, k)`. A non-square image only takes `k` in {0, 2},
    so the shape is kept.

    Args:
        image: tensor `(H, W, C)`.
        seed: int32 tensor `[2]`.

    Returns:
        Tensor of the same shape.
    """
    image = tf.convert_to_tensor(image)
    if _dim(image, "random_quarter_turn") != 2:
        raise ValueError(
            f"random_quarter_turn expects an image (H, W, C). Received: shape={image.shape}"
        )
    square = image.shape[0] is not None and image.shape[0] == image.shape[1]
    turns = (0, 1, 2, 3) if square else (0, 2)
    k = tf.minimum(tf.cast(_uniform([], seed) * len(turns), tf.int32), len(turns) - 1)
    return tf.switch_case(k, [lambda t=t: rot90(image, t, (0, 1)) for t in turns])


def random_scale_shift(volume, seed, contrast=0.2, brightness=0.2):
    """Random contrast and brightness: `volume * (1 + c) + b`, `c` and `b` uniform in +-limits.

    albumentations' `RandomBrightnessContrast` on float images (its defaults,
    applied with p 1 in the old 2D exemplar chain): contrast scales about 0,
    brightness adds a fraction of the maximum value 1. albumentations then
    clips to [0, 1], its float images' range; ours are normalised (z-score by
    default), so nothing is clipped.

    Args:
        volume: float tensor `(*spatial, C)`.
        seed: int32 tensor `[2]`.
        contrast: float, limit of the contrast change. Default 0.2.
        brightness: float, limit of the shift. Default 0.2.

    Returns:
        Tensor of the same shape.
    """
    volume = tf.convert_to_tensor(volume)
    _dim(volume, "random_scale_shift")
    u = _uniform([2], seed, -1.0, 1.0)
    scale = tf.cast(1.0 + contrast * u[0], volume.dtype)
    return volume * scale + tf.cast(brightness * u[1], volume.dtype)


def exemplar_augment_2d(image, seed):
    """The old code's 2D exemplar augmentation chain (albumentations there).

    A random quarter turn (p 1, `k` in 0..3) -> vertical flip (p 0.5) ->
    horizontal flip (p 0.5) -> brightness and contrast (p 1, `random_scale_shift`).
    The 3D chain (`exemplar_augment`) is the paper's; on images the old code
    used this one.

    Args:
        image: float tensor `(H, W, C)`.
        seed: int32 tensor `[2]`.

    Returns:
        Tensor of the same shape.
    """
    turn_seed, flip_seed, intensity_seed = _split(seed, 3)
    image = random_quarter_turn(image, turn_seed)
    image = random_flip(image, flip_seed)  # axis 0 (vertical), then axis 1 (horizontal)
    return random_scale_shift(image, intensity_seed)


def fundus_augment(image, seed, zoom_range=(0.85, 1.15)):
    """The old code's fundus-photograph augmentation: a random zoom, then random flips.

    As its 2D data generators (Keras `random_zoom(zoom_range=(0.85, 1.15),
    fill_mode="constant", cval=0)`, then albumentations' horizontal and
    vertical flips, p 0.5 each). Keras draws one factor `z` per axis, uniform
    in `zoom_range`, and samples the input at `c + (i - c) * z`, so `z > 1`
    zooms out; outside the photograph is 0.

    Args:
        image: float tensor `(H, W, C)`.
        seed: int32 tensor `[2]`.
        zoom_range: pair of floats, range of the per-axis Keras factor.
            Default `(0.85, 1.15)`.

    Returns:
        Tensor of the same shape.
    """
    image = tf.convert_to_tensor(image)
    dim = _dim(image, "fundus_augment")
    zoom_seed, flip_seed = _split(seed, 2)
    keras_factors = _uniform([dim], zoom_seed, zoom_range[0], zoom_range[1])
    image = zoom(image, 1.0 / keras_factors, fill_value=0.0)
    return random_flip(image, flip_seed)
