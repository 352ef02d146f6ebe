"""Permutation sets for jigsaw puzzles with a large minimum Hamming distance.

The paper picks its P permutations with the maximal-Hamming-distance method of
Noroozi & Favaro (2016); the authors' code drew them uniformly at random
instead (for 27 patches and P = 100 its pairwise minimum was 19). `27!`
cannot be enumerated, so we:

1. draw a large pool of random permutations (all of them when `n! <= pool_size`),
2. greedily add the pool member whose minimum Hamming distance to the chosen
   set is largest (max-min, ties to the lowest pool index),
3. refine: repeatedly take a permutation of a closest pair and replace it by
   the best of a fresh batch of random candidates if that raises its own
   minimum distance, until no step helps `refine_steps` times in a row.

For 27 items and P = 100 the greedy step reaches 24 and the refinement 25 (of
27) in about a second. Everything is drawn from `numpy.random.default_rng(seed)`,
so the set is a pure function of the arguments; tasks store it with the model.
"""

import functools
import itertools
import math

import numpy as np

from ssl3d_keras.errors import ConfigError


def _hamming_to(candidates, perms):
    """Minimum Hamming distance of each candidate to the rows of `perms`: `(K,)`."""
    best = np.full(len(candidates), candidates.shape[1] + 1, np.int64)
    for start in range(0, len(perms), 32):  # chunks bound the (K, 32, n) temporary
        block = perms[start : start + 32]
        dist = (candidates[:, None, :] != block[None, :, :]).sum(-1).min(1)
        best = np.minimum(best, dist)
    return best


def _pairwise(perms):
    dist = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    np.fill_diagonal(dist, perms.shape[1] + 1)
    return dist


def random_permutations(n_items, n_perms, *, seed=0):
    """`n_perms` distinct uniformly random permutations (the old code's baseline).

    Returns:
        np.int32 array `(n_perms, n_items)`.
    """
    _check(n_items, n_perms)
    rng = np.random.default_rng(seed)
    rows, seen = [], set()
    while len(rows) < n_perms:
        row = rng.permutation(n_items)
        if row.tobytes() not in seen:
            seen.add(row.tobytes())
            rows.append(row)
    return np.array(rows, np.int32)


def maximal_hamming_permutations(
    n_items, n_perms, *, seed=0, pool_size=100_000, refine_steps=30, batch=4096
):
    """A set of permutations whose minimum pairwise Hamming distance is large.

    Args:
        n_items: int, number of patches (27 for a 3 x 3 x 3 grid, 9 for 3 x 3).
        n_perms: int, number of permutations P (paper: 100).
        seed: int, seed of the numpy generator; the set is deterministic.
        pool_size: int, number of random candidates of the greedy step.
        refine_steps: int, refinement stops after this many steps in a row
            without improvement (0 disables refinement).
        batch: int, fresh candidates per refinement step.

    Returns:
        np.int32 array `(n_perms, n_items)`; row `p` is a permutation of
        `0..n_items-1`, rows are distinct.
    """
    _check(n_items, n_perms)
    return _maximal_hamming(int(n_items), int(n_perms), int(seed), int(pool_size),
                            int(refine_steps), int(batch)).copy()  # fmt: skip


@functools.lru_cache(maxsize=8)
def _maximal_hamming(n_items, n_perms, seed, pool_size, refine_steps, batch):
    rng = np.random.default_rng(seed)
    dtype = np.int8 if n_items < 128 else np.int32
    if math.factorial(n_items) <= pool_size:
        pool = np.array(list(itertools.permutations(range(n_items))), dtype)
        pool = pool[rng.permutation(len(pool))]
    else:
        pool = np.argsort(rng.random((pool_size, n_items)), axis=1).astype(dtype)
    # Greedy max-min selection.
    chosen = [0]
    min_dist = (pool != pool[0]).sum(1)
    min_dist[0] = -1
    for _ in range(n_perms - 1):
        j = int(np.argmax(min_dist))
        chosen.append(j)
        min_dist = np.minimum(min_dist, (pool != pool[j]).sum(1))
        min_dist[j] = -1
    perms = pool[chosen].copy()
    # Refinement: replace a member of a closest pair when a fresh candidate is farther.
    failures = 0
    dist = _pairwise(perms)
    while n_perms > 1 and failures < refine_steps:
        pairs = np.argwhere(dist == dist.min())
        i = int(pairs[rng.integers(len(pairs))][0])
        others = np.delete(perms, i, axis=0)
        candidates = np.argsort(rng.random((batch, n_items)), axis=1).astype(dtype)
        scores = _hamming_to(candidates, others)
        best = int(np.argmax(scores))
        if scores[best] > dist[i].min():
            perms[i] = candidates[best]
            row = (perms != perms[i]).sum(1)
            row[i] = n_items + 1
            dist[i], dist[:, i] = row, row
            failures = 0
        else:
            failures += 1
    return perms.astype(np.int32)


def min_pairwise_hamming(perms):
    """The smallest Hamming distance between two rows of `perms` `(P, n)`."""
    perms = np.asarray(perms)
    if len(perms) < 2:
        raise ValueError(f"need at least 2 permutations. Received: shape={perms.shape}")
    return int(_pairwise(perms).min())


def _check(n_items, n_perms):
    if int(n_items) < 2:
        raise ConfigError("n_items", f"expected an int >= 2. Received: {n_items!r}")
    if not 1 <= int(n_perms) <= math.factorial(int(n_items)):
        raise ConfigError(
            "num_permutations",
            f"expected 1 <= P <= {n_items}! distinct permutations. Received: {n_perms!r}",
        )
