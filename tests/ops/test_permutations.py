"""Maximal-Hamming permutation sets for jigsaw puzzles."""

import itertools

import numpy as np
import pytest

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.ops.permutations import (
    _maximal_hamming,
    affine_permutations,
    field_add,
    field_multiply,
    irreducible_polynomial,
    maximal_hamming_permutations,
    min_pairwise_hamming,
    permutation_set,
    prime_power,
    random_permutations,
    resolve_permutation_set,
)


def brute_min_hamming(perms):
    return min(int(np.sum(a != b)) for a, b in itertools.combinations(perms, 2))


def check_set(perms, n_items, n_perms):
    assert perms.shape == (n_perms, n_items) and perms.dtype == np.int32
    assert all(sorted(row) == list(range(n_items)) for row in perms.tolist())
    assert len({row.tobytes() for row in perms}) == n_perms


def test_paper_jigsaw_set_beats_random():
    perms = maximal_hamming_permutations(27, 100)  # ~2.5 s on a quiet machine
    check_set(perms, 27, 100)
    greedy = min_pairwise_hamming(perms)
    baseline = min_pairwise_hamming(random_permutations(27, 100))
    assert greedy == brute_min_hamming(perms)
    assert greedy >= 25 > baseline  # the old code's random set had 19
    # The set is cached per process; callers get a copy they cannot corrupt it through.
    again = maximal_hamming_permutations(27, 100, seed=0)
    again[0, 0] = -1
    np.testing.assert_array_equal(perms, maximal_hamming_permutations(27, 100))


def test_seed_and_2d_grid():
    small = maximal_hamming_permutations(9, 30, seed=3, pool_size=5000)
    check_set(small, 9, 30)
    _maximal_hamming.cache_clear()  # regenerate from scratch: same seed, same set
    np.testing.assert_array_equal(
        small, maximal_hamming_permutations(9, 30, seed=3, pool_size=5000)
    )
    other = maximal_hamming_permutations(9, 30, seed=4, pool_size=5000)
    assert not np.array_equal(small, other)
    assert min_pairwise_hamming(small) > min_pairwise_hamming(random_permutations(9, 30, seed=3))


def test_full_enumeration_for_few_items():
    # 4! = 24 <= pool: every permutation can be chosen; all 24 are distinct.
    check_set(maximal_hamming_permutations(4, 24), 4, 24)
    # Greedy max-min over all of S_4 picks 4 permutations at distance 4 (a Latin square).
    assert min_pairwise_hamming(maximal_hamming_permutations(4, 4, refine_steps=0)) == 4


def test_min_pairwise_hamming_hand_case():
    assert min_pairwise_hamming([[0, 1, 2], [1, 0, 2], [2, 1, 0]]) == 2
    with pytest.raises(ValueError):
        min_pairwise_hamming([[0, 1, 2]])


def test_bad_arguments():
    with pytest.raises(ConfigError, match="num_permutations"):
        maximal_hamming_permutations(3, 7)
    with pytest.raises(ConfigError, match="n_items"):
        maximal_hamming_permutations(1, 1)


# --- affine maps of GF(q) ------------------------------------------------------------------


def brute_is_field(p, k, f):
    """Every non-zero element has an inverse, multiplication is commutative and associative,
    and distributes over addition: checked over all elements with `field_multiply`."""
    q = p**k
    x = np.arange(q)
    mul = field_multiply(x[:, None], x[None, :], p, f)
    add = field_add(x[:, None], x[None, :], p, k)
    inverses = all(1 in mul[a] for a in range(1, q))
    commutative = (mul == mul.T).all()
    associative = (mul[mul] == mul[x[:, None, None], mul[None]]).all()  # (ab)c == a(bc)
    distributive = all((mul[a][add] == add[mul[a]][:, mul[a]]).all() for a in range(q))
    return inverses and commutative and associative and distributive


def test_prime_powers():
    assert [prime_power(n) for n in (2, 4, 8, 9, 25, 27, 49, 121)] == [
        (2, 1), (2, 2), (2, 3), (3, 2), (5, 2), (3, 3), (7, 2), (11, 2)]
    assert [prime_power(n) for n in (1, 6, 12, 36, 100)] == [None] * 5


def test_gf27_modulus_is_x3_minus_x_plus_1_and_irreducible():
    f = irreducible_polynomial(3, 3)
    assert f == [1, 2, 0, 1]  # x^3 + 2x + 1 = x^3 - x + 1 over GF(3)
    # A cubic is irreducible iff it has no root in GF(3).
    assert all((x**3 + 2 * x + 1) % 3 for x in range(3))
    # x^3 + 1 = (x + 1)^3 in characteristic 3 is reducible: the search skipped it.
    assert any((x**3 + 1) % 3 == 0 for x in range(3))
    assert brute_is_field(3, 3, f)


@pytest.mark.parametrize("q", [4, 8, 9, 16, 25])
def test_small_fields_are_fields(q):
    p, k = prime_power(q)
    assert brute_is_field(p, k, irreducible_polynomial(p, k))


def test_gf9_multiplication_by_hand():
    # GF(9) = GF(3)[x] / (x^2 + 1): code c0 + 3 c1 is c0 + c1 x, x^2 = -1.
    f = irreducible_polynomial(3, 2)
    assert f == [1, 0, 1]
    x, one_plus_x = 3, 1 + 3
    assert field_multiply(x, x, 3, f) == 2  # x * x = -1 = 2
    assert field_multiply(one_plus_x, one_plus_x, 3, f) == 6  # 1 + 2x + x^2 = 2x = code 6


@pytest.mark.parametrize("n_items, n_perms", [(27, 100), (27, 702), (9, 72), (9, 30), (8, 56)])
def test_affine_sets_reach_distance_n_minus_1(n_items, n_perms):
    perms = affine_permutations(n_items, n_perms, seed=5)
    check_set(perms, n_items, n_perms)
    assert min_pairwise_hamming(perms) == brute_min_hamming(perms) == n_items - 1
    np.testing.assert_array_equal(perms[0], np.arange(n_items))


def test_affine_beats_greedy_and_random_for_27_patches():
    affine = min_pairwise_hamming(affine_permutations(27, 100))
    assert affine == 26 > min_pairwise_hamming(maximal_hamming_permutations(27, 100))
    assert affine > min_pairwise_hamming(random_permutations(27, 100))


def test_affine_set_is_seed_stable():
    a = affine_permutations(27, 100, seed=0)
    np.testing.assert_array_equal(a, affine_permutations(27, 100, seed=0))
    b = affine_permutations(27, 100, seed=1)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a[0], b[0])  # the identity is always class 0


def test_affine_arguments():
    with pytest.raises(ConfigError, match="permutation_set"):
        affine_permutations(36, 10)
    with pytest.raises(ConfigError, match="num_permutations"):
        affine_permutations(9, 73)


def test_permutation_set_by_name():
    assert resolve_permutation_set("auto", 27, 100) == "affine"
    assert resolve_permutation_set("auto", 9, 100) == "greedy"  # 72 affine maps only
    assert resolve_permutation_set("auto", 36, 10) == "greedy"
    assert resolve_permutation_set("greedy", 27, 100) == "greedy"
    np.testing.assert_array_equal(permutation_set("greedy", 27, 10),
                                  maximal_hamming_permutations(27, 10))
    np.testing.assert_array_equal(permutation_set("auto", 27, 10), affine_permutations(27, 10))
    with pytest.raises(ConfigError, match="did you mean 'affine'"):
        resolve_permutation_set("afine", 27, 100)
