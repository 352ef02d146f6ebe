"""Which labelled cases train, validate and test a fine-tuning run.

The paper's protocol compares methods at several label fractions, so the
splits must be fair across every cell of that comparison:

- the **test** split depends only on the split seed: every method, fraction and
  repeat is scored on the same cases (drawn by
  `ssl3d_keras.data.holdout.seeded_test_split`, which also picks the cases
  pretraining holds out);
- the **validation** split (which picks the best checkpoint) is fixed the same way;
- the remaining cases form the labelled **pool**; a repeat draws one seeded
  permutation of the pool and a label fraction takes its first
  `ceil(fraction * len(pool))` cases, so 10 % of the cases is a subset of 25 %,
  which is a subset of 50 % (nested), and two repeats draw different subsets.

Cases are sorted by id before any shuffle, so the splits never depend on
directory order (the old code's splits did).

Example:

>>> splits = make_splits([f"case_{i:02d}" for i in range(20)], label_fraction=0.25)
>>> len(splits.test), len(splits.validation), len(splits.train)
(4, 2, 4)
"""

import dataclasses
import math

import numpy as np

from ssl3d_keras.data.holdout import seeded_test_split
from ssl3d_keras.errors import ConfigError, DataError

__all__ = ["Splits", "make_splits"]


@dataclasses.dataclass(frozen=True)
class Splits:
    """The case ids of one fine-tuning run, each list sorted.

    Attributes:
        train: the cases whose labels the run trains on.
        validation: cases scored during training to pick the best checkpoint.
        test: cases scored once at the end (the same for every method and fraction).
        pool: every case a label fraction may draw from (train is a prefix of
            the repeat's permutation of it).
        label_fraction: the fraction of `pool` in `train`.
        repeat: which permutation of the pool.
        seed: the split seed.
    """

    train: list
    validation: list
    test: list
    pool: list
    label_fraction: float
    repeat: int
    seed: int

    def as_dict(self):
        """JSON-ready record of which case was used for what."""
        return dataclasses.asdict(self)


def _rng(*keys):
    return np.random.default_rng([int(k) for k in keys])


def make_splits(case_ids, *, label_fraction=1.0, repeat=0, seed=0, test_fraction=0.2,
                validation_fraction=0.1, min_test=1):
    """Seeded test / validation / train split with nested label fractions.

    Args:
        case_ids: iterable of str, the labelled cases (any order; sorted here).
        label_fraction: float in (0, 1], the share of the pool trained on.
        repeat: int >= 0, which seeded subset of the pool (repeats differ).
        seed: int, the split seed; test and validation depend on it alone.
        test_fraction: float in [0, 1), share of all cases held out for testing
            (rounded, at least `min_test`).
        validation_fraction: float in [0, 1), share of the cases left after
            the test split used for validation (rounded; 0 turns validation off,
            and the run keeps its last checkpoint).
        min_test: int, the fewest test cases accepted.

    Returns:
        A `Splits`.

    Raises:
        ConfigError: a fraction is out of range.
        DataError: too few cases for a test split and at least one training case.
    """
    ids = sorted(str(c) for c in case_ids)
    if len(set(ids)) != len(ids):
        raise DataError("cases", f"case ids must be unique. Received {len(ids)} ids, "
                        f"{len(set(ids))} distinct")
    label_fraction = float(label_fraction)
    if not 0 < label_fraction <= 1:
        raise ConfigError("label_fraction", f"must be in (0, 1]. Received: {label_fraction}")
    for key, value in (("test_fraction", test_fraction),
                       ("validation_fraction", validation_fraction)):
        if not 0 <= float(value) < 1:
            raise ConfigError(key, f"must be in [0, 1). Received: {value}")
    if int(repeat) < 0:
        raise ConfigError("repeat", f"must be >= 0. Received: {repeat}")

    # The test split is the one pretraining holds out (`data.holdout`): one function draws both.
    test, rest = seeded_test_split(ids, seed=seed, test_fraction=test_fraction,
                                   min_test=min_test)
    n_test = len(test)
    n_validation = round(float(validation_fraction) * len(rest)) if validation_fraction else 0
    if n_validation and len(rest) - n_validation < 1:
        n_validation = 0
    if len(rest) - n_validation < 1:
        raise DataError("cases", f"{len(ids)} labelled case(s) leave no training case after "
                        f"{n_test} test and {n_validation} validation case(s); add cases or "
                        f"lower split.test_fraction. Received: {len(ids)} cases")
    validation = sorted(rest[:n_validation])
    pool = sorted(rest[n_validation:])

    permutation = _rng(seed, 1, repeat).permutation(len(pool))
    n_train = max(1, math.ceil(label_fraction * len(pool) - 1e-9))
    train = sorted(pool[i] for i in permutation[:n_train])
    return Splits(train=train, validation=validation, test=test, pool=pool,
                  label_fraction=label_fraction, repeat=int(repeat), seed=int(seed))
