"""Contrastive and metric-learning losses of the proxy tasks, in `keras.ops`.

- `info_nce_loss` / `info_nce_accuracy`: contrastive predictive coding (the
  paper's loss): each prediction must pick its own target out of all targets
  of the batch.
- `binary_cpc_loss` / `binary_cpc_accuracy`: what the authors' old CPC code
  trained instead (a sigmoid on a mean dot product, one negative per positive).
- `triplet_loss` / `triplet_accuracy`: exemplar networks.

Every function computes in float32 whatever the input dtype (mixed precision
keeps the loss in full precision) and returns a scalar mean over the batch.
"""

from keras import ops

from ssl3d_keras.errors import ConfigError

TRIPLET_DISTANCES = ("squared_euclidean", "mean_squared")


def _float32(*tensors):
    return [ops.cast(t, "float32") for t in tensors]


def info_nce_logits(predictions, targets, temperature=1.0):
    """Scores of every prediction against every target: `p_i . t_j / temperature`.

    Args:
        predictions: float tensor `(..., n, code)`.
        targets: float tensor `(..., N, code)` (the candidates; `N >= n`).
        temperature: float, divides the dot products.

    Returns:
        float32 tensor `(..., n, N)`: `logits[..., i, j]` scores prediction `i`
        against target `j`.
    """
    predictions, targets = _float32(predictions, targets)
    return ops.matmul(predictions, ops.swapaxes(targets, -1, -2)) / temperature


def _positive_mask(logits, offset):
    """One-hot `(n, N)` of each prediction's own target: row `i` -> column `offset + i`."""
    rows, columns = ops.shape(logits)[-2], ops.shape(logits)[-1]
    positives = ops.arange(rows, dtype="int32") + ops.cast(offset, "int32")
    return ops.one_hot(positives, columns, dtype="float32"), positives


def info_nce_loss(predictions, targets, *, temperature=1.0, offset=0):
    """InfoNCE: cross-entropy of picking the true target among all `N` candidates.

    For each prediction `i` (and each leading index), a softmax over its
    scores against the `N` targets; the loss is `-log softmax` of its own
    target (row `offset + i`), averaged over everything. With random codes it
    is about `log(N)`.

    Args:
        predictions: float tensor `(..., n, code)` (e.g. `(steps, n, code)`:
            one InfoNCE problem per prediction step).
        targets: float tensor `(..., N, code)` with `N >= n`; row `offset + i`
            is the positive of prediction `i`, the other `N - 1` rows its
            negatives. Usually `N = n` (the batch's own targets); under a
            distribution strategy the targets of every replica, gathered.
        temperature: float, default 1 (plain dot products, as in CPC).
        offset: int or int32 scalar tensor, row of `targets` holding the
            positive of prediction 0 (this replica's first row in the
            gathered targets). Default 0.

    Returns:
        float32 scalar.

    Example:

    >>> import numpy as np
    >>> from ssl3d_keras.losses import info_nce_loss
    >>> z = np.eye(4, dtype="float32") * 10
    >>> float(info_nce_loss(z, z)) < 1e-3
    True
    >>> float(info_nce_loss(z[2:], z, offset=2)) < 1e-3  # predictions 2, 3 of 4 candidates
    True
    """
    logits = info_nce_logits(predictions, targets, temperature)
    log_probs = ops.log_softmax(logits, axis=-1)
    mask, _ = _positive_mask(logits, offset)
    return -ops.mean(ops.sum(log_probs * mask, axis=-1))


def info_nce_accuracy(predictions, targets, *, offset=0):
    """Fraction of predictions whose highest-scoring target is their own.

    Args:
        predictions: float tensor `(..., n, code)`.
        targets: float tensor `(..., N, code)`.
        offset: see `info_nce_loss`.

    Returns:
        float32 scalar; chance is `1 / N`.
    """
    logits = info_nce_logits(predictions, targets)
    picked = ops.argmax(logits, axis=-1)
    _, truth = _positive_mask(logits, offset)
    return ops.mean(ops.cast(ops.equal(picked, ops.cast(truth, picked.dtype)), "float32"))


def binary_cpc_scores(predictions, targets):
    """The old code's score: mean over steps and code of `prediction * target`.

    Args:
        predictions: float tensor `(batch, ..., steps, code)`.
        targets: float tensor of the same shape.

    Returns:
        float32 tensor `(batch, ...)` of logits (the old code took their sigmoid).
    """
    predictions, targets = _float32(predictions, targets)
    return ops.mean(predictions * targets, axis=(-2, -1))


def binary_cpc_loss(predictions, positives, negatives):
    """Binary CPC (the authors' old code): tell the true future from one negative.

    Each prediction is scored (`binary_cpc_scores`) against its true targets
    (label 1) and against one negative's targets (label 0); the loss is the
    binary cross-entropy of the sigmoid of the scores, averaged over all
    `2 * batch` decisions.

    Args:
        predictions: float tensor `(batch, ..., steps, code)`.
        positives: float tensor, same shape: the true target codes.
        negatives: float tensor, same shape: the codes of one negative each.

    Returns:
        float32 scalar; `log(2)` when every score is 0.
    """
    positive = binary_cpc_scores(predictions, positives)
    negative = binary_cpc_scores(predictions, negatives)
    # -log(sigmoid(s)) = softplus(-s); -log(1 - sigmoid(s)) = softplus(s).
    return 0.5 * (ops.mean(ops.softplus(-positive)) + ops.mean(ops.softplus(negative)))


def binary_cpc_accuracy(predictions, positives, negatives):
    """Binary accuracy of the decisions of `binary_cpc_loss` (threshold 0.5).

    Returns:
        float32 scalar; chance is 0.5.
    """
    positive = binary_cpc_scores(predictions, positives)
    negative = binary_cpc_scores(predictions, negatives)
    hits = ops.mean(ops.cast(positive > 0, "float32")) + ops.mean(ops.cast(negative < 0, "float32"))
    return 0.5 * hits


def triplet_distances(anchor, positive, negative, distance="squared_euclidean"):
    """Distances `D(a, p)` and `D(a, n)` of a batch of triplets.

    Args:
        anchor, positive, negative: float tensors `(batch, embedding)`.
        distance: `"squared_euclidean"` (sum of squared differences; on
            L2-normalised embeddings it lies in [0, 4]) or `"mean_squared"`
            (mean of squared differences, the old code's).

    Returns:
        `(d_ap, d_an)`: float32 tensors `(batch,)`.

    Raises:
        ConfigError: unknown `distance`.
    """
    if distance not in TRIPLET_DISTANCES:
        raise ConfigError(
            "distance", f"expected one of {TRIPLET_DISTANCES}. Received: {distance!r}"
        )
    anchor, positive, negative = _float32(anchor, positive, negative)
    reduce = ops.sum if distance == "squared_euclidean" else ops.mean
    d_ap = reduce(ops.square(anchor - positive), axis=-1)
    d_an = reduce(ops.square(anchor - negative), axis=-1)
    return d_ap, d_an


def triplet_loss(anchor, positive, negative, margin=1.0, *, distance="squared_euclidean"):
    """Triplet hinge loss: `mean(max(0, D(a, p) - D(a, n) + margin))`.

    A triplet stops contributing (the hinge switches off) once the negative is
    farther from the anchor than the positive by at least `margin`. With
    L2-normalised embeddings and the squared Euclidean distance, `D` spans
    [0, 4], so margin 1 (the paper's) can be met. The old code's mean squared
    distance of sigmoid outputs lies in [0, 1] and never meets margin 1.

    Args:
        anchor: float tensor `(batch, embedding)`.
        positive: float tensor `(batch, embedding)`.
        negative: float tensor `(batch, embedding)`.
        margin: float, default 1.0 (the paper's).
        distance: see `triplet_distances`.

    Returns:
        float32 scalar.

    Example:

    >>> import numpy as np
    >>> from ssl3d_keras.losses import triplet_loss
    >>> a = np.array([[1.0, 0.0]], "float32"); n = np.array([[-1.0, 0.0]], "float32")
    >>> float(triplet_loss(a, a, n, margin=1.0))  # D(a, n) = 4 > 0 + 1: hinge off
    0.0
    """
    d_ap, d_an = triplet_distances(anchor, positive, negative, distance)
    return ops.mean(ops.relu(d_ap - d_an + margin))


def triplet_accuracy(anchor, positive, negative, *, distance="squared_euclidean"):
    """Fraction of triplets with `D(a, p) < D(a, n)`; chance is 0.5.

    Returns:
        float32 scalar.
    """
    d_ap, d_an = triplet_distances(anchor, positive, negative, distance)
    return ops.mean(ops.cast(d_ap < d_an, "float32"))
