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
27) in about a second.

When the number of items `q` is a prime power (27 = 3^3 cells of a 3 x 3 x 3
grid, 9 = 3^2 of a 3 x 3 grid, 8, 4, 16, 25, ...) an algebraic set does better:
number the items by the elements of the finite field GF(q) and take the affine
maps `x -> a*x + b` (`a != 0`). Two distinct affine maps agree on at most one
point (`a*x + b = a'*x + b'` has one solution when `a != a'` and none when only
`b` differs), so any subset of the `q(q - 1)` maps (702 for 27 items) has
minimum pairwise Hamming distance at least `q - 1`: **26 of 27**. That is the
optimum for more than `q` permutations (at distance `q`, every position would
need a different item in every permutation, so there are at most `q` of them).
`affine_permutations` picks P of them: the identity first, then P - 1 others drawn
without replacement.

Everything is drawn from `numpy.random.default_rng(seed)`, so a set is a pure
function of the arguments; tasks store it with the model.
"""

import functools
import itertools
import math

import numpy as np

from ssl3d_keras.config import check_choice
from ssl3d_keras.errors import ConfigError

# Names of the permutation-set constructions (the jigsaw task's `permutation_set`).
PERMUTATION_SETS = ("affine", "greedy")


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


def prime_power(n):
    """`(p, k)` with `p**k == n` and `p` prime, or `None` if `n` is no prime power."""
    n = int(n)
    if n < 2:
        return None
    p = next(d for d in range(2, n + 1) if n % d == 0)  # smallest prime factor
    k, rest = 0, n
    while rest % p == 0:
        rest //= p
        k += 1
    return (p, k) if rest == 1 else None


def _poly_mod(a, f, p):
    """Remainder of polynomial `a` by monic `f` over GF(p); coefficients lowest degree first."""
    a = list(a)
    while len(a) >= len(f):
        lead = a[-1]
        if lead:
            shift = len(a) - len(f)
            for i, c in enumerate(f):
                a[shift + i] = (a[shift + i] - lead * c) % p
        a.pop()
    return a


def _monic(degree, code, p):
    """The monic polynomial of `degree` whose lower coefficients are the base-p digits of `code`."""
    return [(code // p**i) % p for i in range(degree)] + [1]


def irreducible_polynomial(p, k):
    """The first monic irreducible polynomial of degree `k` over GF(p).

    Candidates are tried in the order of their lower coefficients read as a
    base-p number (constant term the lowest digit); a candidate is irreducible
    when no monic polynomial of degree `1 .. k // 2` divides it.

    Returns:
        list of `k + 1` ints in `[0, p)`, lowest degree first (the last is 1).
        For GF(27): `[1, 2, 0, 1]`, i.e. `x^3 + 2x + 1 = x^3 - x + 1`.
    """
    for code in range(p**k):
        f = _monic(k, code, p)
        if f[0] == 0 and k > 1:  # divisible by x
            continue
        if not any(
            not any(_poly_mod(f, _monic(d, c, p), p))
            for d in range(1, k // 2 + 1)
            for c in range(p**d)
        ):
            return f
    raise AssertionError(f"no irreducible polynomial of degree {k} over GF({p})")  # never


def field_multiply(a, b, p, f):
    """Products `a * b` in GF(p^k) of integer-coded elements, elementwise.

    An element is coded by the integer whose base-p digits are its polynomial
    coefficients (lowest degree the lowest digit); `f` is the field's monic
    irreducible polynomial of degree k. Addition is digitwise mod p.

    Args:
        a, b: int arrays (broadcast together) of codes in `[0, p**k)`.
        p: prime.
        f: coefficients of the modulus, lowest first (`irreducible_polynomial`).

    Returns:
        np.int64 array of the product codes.
    """
    k = len(f) - 1
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    da, db = _digits(a, p, k), _digits(b, p, k)
    product = np.zeros(a.shape + (2 * k - 1,), np.int64)
    for i in range(k):
        for j in range(k):
            product[..., i + j] += da[..., i] * db[..., j]
    product %= p
    for top in range(2 * k - 2, k - 1, -1):  # reduce x^top with x^k = -(f_0 + ... + f_{k-1} x^{k-1})
        lead = product[..., top]
        for i in range(k):
            product[..., top - k + i] -= lead * f[i]
        product[..., top] = 0
    return _undigits(product[..., :k] % p, p)


def field_add(a, b, p, k):
    """Sums `a + b` in GF(p^k) of integer-coded elements (digitwise mod p)."""
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    return _undigits((_digits(a, p, k) + _digits(b, p, k)) % p, p)


def _digits(x, p, k):
    return np.stack([(x // p**i) % p for i in range(k)], axis=-1)


def _undigits(d, p):
    return (d * p ** np.arange(d.shape[-1])).sum(-1)


def affine_permutations(n_items, n_perms, *, seed=0):
    """P affine maps `x -> a*x + b` of GF(n_items): minimum pairwise Hamming distance `n - 1`.

    Item `i` is the field element coded by `i` (`field_multiply`); row
    `(a, b)` is the permutation `i -> a*i + b`. The identity (`a = 1, b = 0`) is
    always row 0, so the unshuffled puzzle is a class; the other `n_perms - 1`
    rows are drawn without replacement from the remaining `n(n - 1) - 1` maps
    by `numpy.random.default_rng(seed)` and kept in `(a, b)` order.

    Args:
        n_items: int, a prime power (27 for a 3 x 3 x 3 grid, 9 for 3 x 3).
        n_perms: int, `1 <= P <= n_items * (n_items - 1)` (702 for 27 items).
        seed: int, which subset.

    Returns:
        np.int32 array `(n_perms, n_items)`, distinct permutations of
        `0..n_items-1` at pairwise Hamming distance `>= n_items - 1`.

    Raises:
        ConfigError: `n_items` is no prime power, or `n_perms` is out of range.

    Example:

    >>> from ssl3d_keras.ops.permutations import affine_permutations, min_pairwise_hamming
    >>> perms = affine_permutations(27, 100)
    >>> perms.shape, min_pairwise_hamming(perms)
    ((100, 27), 26)
    """
    _check(n_items, n_perms)
    n_items, n_perms = int(n_items), int(n_perms)
    power = prime_power(n_items)
    if power is None:
        raise ConfigError("permutation_set", "'affine' needs a prime-power number of patches "
                          f"(4, 8, 9, 16, 25, 27, ...). Received: {n_items} patches")
    if n_perms > n_items * (n_items - 1):
        raise ConfigError("num_permutations", f"'affine' has {n_items * (n_items - 1)} "
                          f"permutations of {n_items} patches. Received: {n_perms}")
    p, k = power
    f = irreducible_polynomial(p, k)
    rng = np.random.default_rng(seed)
    # Map index m = (a - 1) * n + b; m = 0 is the identity (a = 1, b = 0).
    others = rng.choice(np.arange(1, n_items * (n_items - 1)), n_perms - 1, replace=False)
    index = np.concatenate([[0], np.sort(others)]).astype(np.int64)
    a, b = index // n_items + 1, index % n_items
    items = np.arange(n_items)
    perms = field_add(field_multiply(a[:, None], items[None, :], p, f), b[:, None], p, k)
    return perms.astype(np.int32)


def permutation_set(kind, n_items, n_perms, *, seed=0):
    """The permutation set of a construction by name.

    Args:
        kind: `"affine"` (`affine_permutations`), `"greedy"`
            (`maximal_hamming_permutations`) or `"auto"`: affine when
            `n_items` is a prime power and P fits (`resolve_permutation_set`).
        n_items, n_perms, seed: as the constructions.

    Returns:
        np.int32 array `(n_perms, n_items)`.
    """
    kind = resolve_permutation_set(kind, n_items, n_perms)
    if kind == "affine":
        return affine_permutations(n_items, n_perms, seed=seed)
    return maximal_hamming_permutations(n_items, n_perms, seed=seed)


def resolve_permutation_set(kind, n_items, n_perms):
    """`"auto"` -> `"affine"` when `n_items` is a prime power with `P <= n(n - 1)`, else `"greedy"`."""
    check_choice("permutation_set", kind, ("auto", *PERMUTATION_SETS))
    if kind != "auto":
        return kind
    n_items, n_perms = int(n_items), int(n_perms)
    affine = prime_power(n_items) is not None and n_perms <= n_items * (n_items - 1)
    return "affine" if affine else "greedy"


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
