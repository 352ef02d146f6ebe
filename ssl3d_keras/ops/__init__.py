"""Pure tensor ops: graph-safe, stateless seeds (int32 `[2]`), 2D and 3D.

- `rotations`: the fixed 90-degree rotation tables and `rotate`.
- `permutations`: jigsaw permutation sets with a large minimum Hamming distance (numpy).
- `patches`: the jittered patch grid and crops.
- `augment`: the exemplar-network augmentations.
"""

from ssl3d_keras.ops.augment import (
    exemplar_augment,
    random_brightness_contrast,
    random_flip,
    random_rot90_or_angle,
    random_zoom,
)
from ssl3d_keras.ops.patches import center_crop, grid_patch_size, grid_patches, random_crop
from ssl3d_keras.ops.permutations import maximal_hamming_permutations, min_pairwise_hamming
from ssl3d_keras.ops.rotations import Rotation, rotate, rotation_table

__all__ = [
    "Rotation",
    "center_crop",
    "exemplar_augment",
    "grid_patch_size",
    "grid_patches",
    "maximal_hamming_permutations",
    "min_pairwise_hamming",
    "random_brightness_contrast",
    "random_crop",
    "random_flip",
    "random_rot90_or_angle",
    "random_zoom",
    "rotate",
    "rotation_table",
]
