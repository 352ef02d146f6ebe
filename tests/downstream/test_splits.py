"""Splits: fixed test and validation cases, nested label fractions, different repeats."""

import pytest

from ssl3d_keras.downstream.splits import make_splits
from ssl3d_keras.errors import ConfigError, DataError

IDS = [f"case_{i:03d}" for i in range(40)]


def test_test_and_validation_do_not_depend_on_fraction_or_repeat():
    reference = make_splits(IDS, label_fraction=1.0, repeat=0, seed=7)
    for fraction in (0.1, 0.25, 0.5):
        for repeat in range(3):
            s = make_splits(IDS, label_fraction=fraction, repeat=repeat, seed=7)
            assert s.test == reference.test
            assert s.validation == reference.validation
            assert s.pool == reference.pool


def test_splits_are_disjoint_and_cover_the_cases():
    s = make_splits(IDS, seed=3)
    assert not set(s.test) & set(s.pool)
    assert not set(s.validation) & set(s.pool)
    assert not set(s.test) & set(s.validation)
    assert sorted(s.test + s.validation + s.pool) == sorted(IDS)
    assert len(s.test) == 8 and len(s.validation) == 3  # round(0.2 * 40), round(0.1 * 32)


def test_label_fractions_are_nested_within_a_repeat():
    for repeat in range(3):
        trains = [set(make_splits(IDS, label_fraction=f, repeat=repeat, seed=1).train)
                  for f in (0.1, 0.25, 0.5, 1.0)]
        for small, large in zip(trains, trains[1:], strict=False):
            assert small < large
        assert trains[-1] == set(make_splits(IDS, seed=1).pool)


def test_repeats_draw_different_subsets():
    subsets = {tuple(make_splits(IDS, label_fraction=0.25, repeat=r).train) for r in range(5)}
    assert len(subsets) == 5


def test_input_order_does_not_matter():
    a = make_splits(IDS, label_fraction=0.5, seed=2)
    b = make_splits(list(reversed(IDS)), label_fraction=0.5, seed=2)
    assert a == b


def test_the_split_seed_changes_the_test_cases():
    assert make_splits(IDS, seed=0).test != make_splits(IDS, seed=1).test


def test_a_small_fraction_keeps_one_case():
    s = make_splits(IDS[:6], label_fraction=0.01, test_fraction=0.2, validation_fraction=0)
    assert len(s.train) == 1


def test_too_few_cases_is_a_clear_error():
    with pytest.raises(DataError, match="leave no training case"):
        make_splits(["only"], test_fraction=0.2)


@pytest.mark.parametrize("key,kwargs", [("label_fraction", {"label_fraction": 0}),
                                        ("label_fraction", {"label_fraction": 1.5}),
                                        ("test_fraction", {"test_fraction": 1.0}),
                                        ("repeat", {"repeat": -1})])
def test_bad_values_name_their_key(key, kwargs):
    with pytest.raises(ConfigError, match=key):
        make_splits(IDS, **kwargs)


def _old_make_splits(ids, seed, test_fraction, validation_fraction, repeat, label_fraction):
    """make_splits as it was before the test split moved to data/holdout.py (a pinned copy)."""
    import math

    import numpy as np

    ids = sorted(ids)
    order = np.random.default_rng([seed, 0]).permutation(len(ids))
    n_test = max(1, round(test_fraction * len(ids)))
    rest = [ids[i] for i in order[n_test:]]
    n_validation = round(validation_fraction * len(rest)) if validation_fraction else 0
    if n_validation and len(rest) - n_validation < 1:
        n_validation = 0
    test = sorted(ids[i] for i in order[:n_test])
    validation = sorted(rest[:n_validation])
    pool = sorted(rest[n_validation:])
    permutation = np.random.default_rng([seed, 1, repeat]).permutation(len(pool))
    train = sorted(pool[i] for i in permutation[:max(1, math.ceil(label_fraction * len(pool)
                                                                  - 1e-9))])
    return test, validation, pool, train


@pytest.mark.parametrize("n,seed,test_fraction,validation_fraction", [
    (40, 0, 0.2, 0.1), (7, 3, 0.2, 0.1), (82, 11, 0.25, 0.2), (5, 2, 0.0, 0.0), (13, 9, 0.5, 0.3)])
def test_splits_are_unchanged_by_the_shared_test_split(n, seed, test_fraction,
                                                       validation_fraction):
    from ssl3d_keras.data.holdout import held_out_cases

    ids = [f"p{i * 37 % 1000:03d}" for i in range(n)]  # distinct, not sorted
    for repeat, fraction in ((0, 1.0), (2, 0.3)):
        s = make_splits(ids, seed=seed, test_fraction=test_fraction,
                        validation_fraction=validation_fraction, repeat=repeat,
                        label_fraction=fraction)
        assert (s.test, s.validation, s.pool, s.train) == _old_make_splits(
            ids, seed, test_fraction, validation_fraction, repeat, fraction)
        # What pretraining holds out with the same split values is this test split.
        assert held_out_cases({"test_fraction": test_fraction, "seed": seed}, ids)[0] == s.test
