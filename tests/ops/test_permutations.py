"""Maximal-Hamming permutation sets for jigsaw puzzles."""

import itertools

import numpy as np
import pytest

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.ops.permutations import (
    _maximal_hamming,
    maximal_hamming_permutations,
    min_pairwise_hamming,
    random_permutations,
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
