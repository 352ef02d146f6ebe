"""Losses of the downstream tasks: soft Dice (+ cross-entropy) and the classification heads.

- `soft_dice_loss`: the paper's segmentation loss, per sample and class,
  averaged over the foreground classes.
- `dice_ce_loss`: soft Dice plus categorical cross-entropy (nnU-Net's default).
- `ordinal_loss`: binary cross-entropy of the ordinal grading head.
- `make_segmentation_loss` / `make_classification_loss`: pick one by name.

Labels are one-hot encoded with `num_classes` (never the batch's maximum label,
which crashed the old code when a class was absent). Every loss computes in
float32 whatever the input dtype and returns a scalar.
"""

from keras import ops

from ssl3d_keras.config import closest
from ssl3d_keras.errors import ConfigError

__all__ = [
    "CLASSIFICATION_LOSSES",
    "SEGMENTATION_LOSSES",
    "dice_ce_loss",
    "make_classification_loss",
    "make_segmentation_loss",
    "ordinal_loss",
    "soft_dice_loss",
    "sparse_categorical_loss",
]

_EPSILON = 1e-7


def _labels_and_probabilities(y_true, y_pred, num_classes):
    """`(one-hot float32 (batch, *spatial, K), probabilities float32)` of a segmentation batch."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(
            "num_classes", f"expected an int >= 2. Received: num_classes={num_classes!r}"
        )
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.cast(y_pred, "float32")
    # Keras pipelines often keep a trailing channel axis on the labels: (batch, *spatial, 1).
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    one_hot = ops.one_hot(ops.cast(y_true, "int32"), num_classes, dtype="float32")
    return one_hot, y_pred


def _dice_per_class(one_hot, y_pred, smooth):
    """Soft Dice `(batch, K)`: per sample and class, summed over space."""
    axes = tuple(range(1, len(y_pred.shape) - 1))
    intersection = ops.sum(one_hot * y_pred, axis=axes)
    denominator = ops.sum(one_hot, axis=axes) + ops.sum(y_pred, axis=axes)
    return (2.0 * intersection + smooth) / (denominator + smooth)


def soft_dice_loss(y_true, y_pred, *, num_classes, include_background=False, smooth=1e-5):
    """Soft Dice loss: `1 - mean` over samples and classes of the soft Dice.

    Per sample `b` and class `k`, over all voxels `i`:
    `dice = (2 * sum(p * g) + smooth) / (sum(p) + sum(g) + smooth)` with `p`
    the predicted probability and `g` the one-hot label. A class absent from a
    sample gives a finite term (`smooth` keeps it defined).

    Args:
        y_true: int tensor `(batch, D, H, W)` (or `(batch, H, W)`, or with a
            trailing axis of 1) of labels in `[0, num_classes)`.
        y_pred: float tensor `(batch, D, H, W, K)` of probabilities, `K = num_classes`.
        num_classes: int >= 2, classes including background.
        include_background: bool, average over class 0 too. Default False.
        smooth: float, added to numerator and denominator. Default 1e-5.

    Returns:
        float32 scalar in `[0, 1]`: about 0 for a perfect prediction, about 1
        for one disjoint from the labels.

    Raises:
        ConfigError: `num_classes < 2`.

    Example:

    >>> import numpy as np
    >>> from ssl3d_keras.downstream.losses import soft_dice_loss
    >>> labels = np.array([[0, 1, 1, 0]])
    >>> float(soft_dice_loss(labels, np.eye(2, dtype="float32")[labels], num_classes=2)) < 1e-6
    True
    """
    one_hot, y_pred = _labels_and_probabilities(y_true, y_pred, num_classes)
    dice = _dice_per_class(one_hot, y_pred, smooth)
    if not include_background:
        dice = dice[:, 1:]
    return 1.0 - ops.mean(dice)


def _categorical_crossentropy(one_hot, y_pred):
    """Mean over voxels of `-log p[label]`, probabilities clipped to `[1e-7, 1]`."""
    log_p = ops.log(ops.clip(y_pred, _EPSILON, 1.0))
    return -ops.mean(ops.sum(one_hot * log_p, axis=-1))


def dice_ce_loss(y_true, y_pred, *, num_classes, ce_weight=1.0, dice_weight=1.0):
    """Soft Dice over the foreground classes plus categorical cross-entropy (nnU-Net's default).

    `dice_weight * soft_dice_loss + ce_weight * mean(-log clip(p[label], 1e-7, 1))`.

    Args:
        y_true: int tensor `(batch, D, H, W)` (or 2D, or with a trailing axis of 1).
        y_pred: float tensor `(batch, D, H, W, K)` of probabilities.
        num_classes: int >= 2, classes including background.
        ce_weight: float, weight of the cross-entropy. Default 1.
        dice_weight: float, weight of the Dice loss. Default 1.

    Returns:
        float32 scalar.

    Raises:
        ConfigError: `num_classes < 2`.
    """
    one_hot, y_pred = _labels_and_probabilities(y_true, y_pred, num_classes)
    dice = 1.0 - ops.mean(_dice_per_class(one_hot, y_pred, 1e-5)[:, 1:])
    return dice_weight * dice + ce_weight * _categorical_crossentropy(one_hot, y_pred)


SEGMENTATION_LOSSES = ("dice_ce", "dice")


def make_segmentation_loss(name, num_classes):
    """The segmentation loss `name` as a Keras loss callable `(y_true, y_pred) -> scalar`.

    Args:
        name: `"dice_ce"` (`dice_ce_loss`) or `"dice"` (`soft_dice_loss`,
            foreground classes, the paper's).
        num_classes: int >= 2, classes including background.

    Returns:
        A function named `name`, for `model.compile(loss=...)` or a custom step.

    Raises:
        ConfigError: an unknown name (with the closest one) or `num_classes < 2`.

    Example:

    >>> from ssl3d_keras.downstream.losses import make_segmentation_loss
    >>> loss = make_segmentation_loss("dice_ce", num_classes=3)
    """
    if name not in SEGMENTATION_LOSSES:
        raise ConfigError(
            "loss",
            f"unknown segmentation loss {name!r}{closest(name, SEGMENTATION_LOSSES)}; choose "
            f"from {list(SEGMENTATION_LOSSES)}. Received: loss={name!r}",
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(
            "num_classes", f"expected an int >= 2. Received: num_classes={num_classes!r}"
        )
    function = dice_ce_loss if name == "dice_ce" else soft_dice_loss

    def loss(y_true, y_pred):
        return function(y_true, y_pred, num_classes=num_classes)

    loss.__name__ = name
    return loss


def ordinal_loss(y_true, y_pred):
    """Binary cross-entropy of the ordinal head, averaged over outputs and samples.

    Args:
        y_true: either the cumulative targets `(batch, K - 1)` of
            `ssl3d_keras.downstream.models.ordinal_targets`, or the int grades
            `(batch,)` (or `(batch, 1)`), encoded here with `K - 1 =
            y_pred.shape[-1]` (for `K = 2` both encodings coincide).
        y_pred: float tensor `(batch, K - 1)` of sigmoid probabilities.

    Returns:
        float32 scalar; probabilities are clipped to `[1e-7, 1 - 1e-7]`.
    """
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.cast(y_pred, "float32")
    outputs = y_pred.shape[-1]
    if not (len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == outputs):
        grades = ops.reshape(ops.cast(y_true, "float32"), (-1, 1))
        y_true = ops.cast(grades > ops.arange(outputs, dtype="float32"), "float32")
    y_true = ops.cast(y_true, "float32")
    p = ops.clip(y_pred, _EPSILON, 1.0 - _EPSILON)
    return -ops.mean(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))


def sparse_categorical_loss(y_true, y_pred):
    """Cross-entropy of softmax probabilities `(batch, K)` against int labels `(batch,)`.

    Probabilities are clipped to `[1e-7, 1]`; float32 scalar mean over the batch.
    """
    y_pred = ops.cast(y_pred, "float32")
    labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    one_hot = ops.one_hot(labels, y_pred.shape[-1], dtype="float32")
    return _categorical_crossentropy(one_hot, y_pred)


CLASSIFICATION_LOSSES = {"softmax": sparse_categorical_loss, "ordinal": ordinal_loss}


def make_classification_loss(head):
    """The loss of a classification head of `build_classification_model`.

    Args:
        head: `"softmax"` (sparse categorical cross-entropy on int labels) or
            `"ordinal"` (`ordinal_loss`, binary cross-entropy).

    Returns:
        A loss callable `(y_true, y_pred) -> float32 scalar`.

    Raises:
        ConfigError: an unknown head (with the closest name).
    """
    if head not in CLASSIFICATION_LOSSES:
        raise ConfigError(
            "head",
            f"unknown head {head!r}{closest(head, CLASSIFICATION_LOSSES)}; choose from "
            f"{sorted(CLASSIFICATION_LOSSES)}. Received: head={head!r}",
        )
    return CLASSIFICATION_LOSSES[head]
