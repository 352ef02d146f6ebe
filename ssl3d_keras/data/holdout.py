"""Cases held out for downstream testing: one seeded test split for pretraining and fine-tuning.

A pretrained encoder that has seen the cases it is later tested on (even
without their labels) scores them too well. The fine-tuning test split
(`ssl3d_keras.downstream.splits.make_splits`) is drawn here, by
`seeded_test_split`, and pretraining with `data.holdout` leaves out exactly
those cases before anything is read, so both sides agree by construction.

A holdout spec is a dict (a TOML table) in one of two forms:

- `{test_fraction = 0.2, seed = 0}` (and optionally `min_test = 1`): the test
  split `make_splits` draws from the labelled cases with the same values (its
  defaults are these);
- `{cases = "runs/finetune/splits.json"}`: the `test` list of a fine-tuning
  run's `splits.json`, or a JSON list of case ids.

Example:

>>> ids = [f"case_{i:02d}" for i in range(10)]
>>> test, rest = seeded_test_split(ids, seed=0, test_fraction=0.2)
>>> len(test), len(rest), sorted(test + rest) == ids
(2, 8, True)
>>> held_out_cases({"test_fraction": 0.2, "seed": 0}, ids)[0] == test
True
"""

import json
from pathlib import Path

import numpy as np

from ssl3d_keras.config import closest
from ssl3d_keras.errors import ConfigError, DataError

__all__ = ["HOLDOUT_DEFAULTS", "check_selection", "held_out_cases", "holdout_rule",
           "seeded_test_split"]

# The defaults of `make_splits` (and of the fine-tuning `SplitConfig`).
HOLDOUT_DEFAULTS = {"test_fraction": 0.2, "seed": 0, "min_test": 1}
_KEYS = (*HOLDOUT_DEFAULTS, "cases")


def seeded_test_split(case_ids, *, seed=0, test_fraction=0.2, min_test=1):
    """The seeded test split of a list of case ids, and the rest in seeded order.

    The ids are sorted, permuted by a generator seeded with `(seed, 0)`, and the
    first `max(min_test, round(test_fraction * n))` are the test cases.

    Args:
        case_ids: iterable of str, the labelled cases (any order).
        seed: int, the split seed.
        test_fraction: float in [0, 1), share of the cases held out.
        min_test: int, the fewest test cases.

    Returns:
        `(test, rest)`: `test` sorted; `rest` the other ids in the seeded
        order (`make_splits` cuts its validation cases from its start).

    Raises:
        DataError: duplicate ids.
        ConfigError: `test_fraction` out of range.
    """
    ids = sorted(str(c) for c in case_ids)
    if len(set(ids)) != len(ids):
        raise DataError("cases", f"case ids must be unique. Received {len(ids)} ids, "
                        f"{len(set(ids))} distinct")
    if not 0 <= float(test_fraction) < 1:
        raise ConfigError("test_fraction", f"must be in [0, 1). Received: {test_fraction}")
    order = np.random.default_rng([int(seed), 0]).permutation(len(ids))
    n_test = max(int(min_test), round(float(test_fraction) * len(ids)))
    test = sorted(ids[i] for i in order[:n_test])
    rest = [ids[i] for i in order[n_test:]]
    return test, rest


def holdout_rule(spec, key="holdout"):
    """A holdout spec checked and completed with the defaults (what is recorded).

    Args:
        spec: dict, see the module docstring.
        key: the config key named in errors (e.g. `"data.holdout"`).

    Returns:
        `{"test_fraction", "seed", "min_test"}` or `{"cases": str}`.

    Raises:
        ConfigError: an unknown key, both forms mixed, or a bad value.
    """
    if not isinstance(spec, dict):
        raise ConfigError(key, f"must be a table such as {{test_fraction = 0.2, seed = 0}} or "
                          f"{{cases = \"splits.json\"}}. Received: {spec!r}")
    for name in spec:
        if name not in _KEYS:
            raise ConfigError(f"{key}.{name}", f"unknown key{closest(name, _KEYS)}; known: "
                              f"{', '.join(_KEYS)}. Received: {name}={spec[name]!r}")
    if "cases" in spec:
        if len(spec) > 1:
            raise ConfigError(key, f"give either 'cases' or test_fraction/seed, not both. "
                              f"Received: {spec!r}")
        if not isinstance(spec["cases"], str) or not spec["cases"]:
            raise ConfigError(f"{key}.cases", f"must be the path of a splits.json or of a JSON "
                              f"list of case ids. Received: {spec['cases']!r}")
        return {"cases": spec["cases"]}
    rule = {**HOLDOUT_DEFAULTS, **spec}
    fraction = rule["test_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise ConfigError(f"{key}.test_fraction", f"must be in [0, 1). Received: {fraction!r}")
    for name, minimum in (("seed", 0), ("min_test", 1)):
        value = rule[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{key}.{name}", f"must be an int >= {minimum}. "
                              f"Received: {value!r}")
    return {"test_fraction": float(fraction), "seed": rule["seed"], "min_test": rule["min_test"]}


def held_out_cases(spec, labelled_ids, *, all_ids=None, key="holdout"):
    """The ids a holdout spec leaves out of a dataset.

    Args:
        spec: dict, see the module docstring.
        labelled_ids: the dataset's labelled case ids (the ones a fine-tuning
            run splits).
        all_ids: every case id of the dataset (labelled or not); a listed id
            outside it is an error. Default `labelled_ids`.
        key: the config key named in errors.

    Returns:
        `(ids, rule)`: the held-out ids (sorted) and the completed spec.

    Raises:
        ConfigError: a bad spec (see `holdout_rule`).
        DataError: no labelled case to split, an unreadable list, or listed
            ids the dataset does not have.
    """
    rule = holdout_rule(spec, key)
    known = set(labelled_ids if all_ids is None else all_ids)
    if "cases" in rule:
        ids = sorted(set(_read_case_list(rule["cases"])))
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise DataError(rule["cases"], f"lists {len(unknown)} case(s) the dataset does not "
                            f"have (was it made from another dataset?). Received e.g. "
                            f"{unknown[:3]}")
        return ids, rule
    if not list(labelled_ids):
        raise DataError(key, "a test split needs labelled cases and the dataset has none; "
                        "give the held-out ids instead ({cases = \"splits.json\"}). "
                        "Received 0 labelled cases")
    test, _ = seeded_test_split(labelled_ids, seed=rule["seed"],
                                test_fraction=rule["test_fraction"], min_test=rule["min_test"])
    return test, rule


def _read_case_list(path):
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "held-out case list not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"does not parse as JSON ({e})") from None
    ids = data.get("test") if isinstance(data, dict) else data
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DataError(path, f"must be a splits.json (with a 'test' list) or a JSON list of "
                        f"case ids. Received {type(data).__name__}"
                        f"{' with keys ' + str(sorted(data)) if isinstance(data, dict) else ''}")
    return ids


def check_selection(manifest, *, holdout=None, include_unlabelled=False, key="data"):
    """Check that a prepared dataset holds out and adds the cases a run asks for.

    A run given an already prepared folder (or resuming with its `prepared/`)
    cannot hold cases out any more: the folder must have been prepared with
    the same holdout (and with the unlabelled cases when they are asked for).

    Args:
        manifest: the prepared folder's `Manifest`.
        holdout: the run's holdout spec, or None.
        include_unlabelled: the run asks for the unlabelled cases.
        key: the config table named in errors.

    Raises:
        ConfigError: naming `{key}.holdout` or `{key}.include_unlabelled`.
    """
    recorded = (manifest.held_out or {}).get("rule")
    if holdout is not None:
        rule = holdout_rule(holdout, f"{key}.holdout")
        if recorded != rule:
            raise ConfigError(f"{key}.holdout", f"the prepared dataset {manifest.source} was "
                              f"prepared with holdout {recorded}, so it may hold the cases to "
                              f"leave out; give the raw dataset as {key}.path (they are left "
                              f"out before preparing) or prepare it with this holdout. "
                              f"Received: {rule}")
    discover = manifest.preprocessing.get("discover") or {}
    if include_unlabelled and not discover.get("unlabelled"):
        raise ConfigError(f"{key}.include_unlabelled", f"the prepared dataset {manifest.source} "
                          f"was prepared without its unlabelled cases; give the raw dataset as "
                          f"{key}.path or prepare it with them (ssl3d_keras.data.prepare_dataset"
                          f"(unlabelled=True)). Received: include_unlabelled=True")
