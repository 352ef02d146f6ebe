"""Held-out cases: the shared seeded test split, holdout specs, and prepare leaving cases out."""

import json
import logging

import numpy as np
import pytest

from ssl3d_keras.data.holdout import (
    check_selection,
    held_out_cases,
    holdout_rule,
    seeded_test_split,
)
from ssl3d_keras.data.manifest import Manifest
from ssl3d_keras.data.prepare import prepare_dataset
from ssl3d_keras.downstream.splits import make_splits
from ssl3d_keras.errors import ConfigError, DataError
from tests.data.helpers_nifti import write_decathlon

IDS = [f"case_{i:03d}" for i in range(30)]


def test_test_split_is_seeded_sorted_and_covers_the_cases():
    test, rest = seeded_test_split(reversed(IDS), seed=4, test_fraction=0.2)
    assert len(test) == 6 and test == sorted(test)
    assert sorted(test + rest) == IDS
    # numpy reference: the first round(0.2 * n) of the (seed, 0) permutation of the sorted ids.
    order = np.random.default_rng([4, 0]).permutation(30)
    assert test == sorted(IDS[i] for i in order[:6]) and rest == [IDS[i] for i in order[6:]]
    assert seeded_test_split(IDS, seed=5)[0] != test
    assert len(seeded_test_split(IDS[:3], test_fraction=0.0)[0]) == 1  # min_test


def test_holdout_rule_fills_defaults_and_names_bad_keys(tmp_path):
    assert holdout_rule({}) == {"test_fraction": 0.2, "seed": 0, "min_test": 1}
    assert holdout_rule({"seed": 3}, "data.holdout")["seed"] == 3
    assert holdout_rule({"cases": "s.json"}) == {"cases": "s.json"}
    for spec, key in (({"test_fracton": 0.2}, "data.holdout.test_fracton"),
                      ({"test_fraction": 1.0}, "data.holdout.test_fraction"),
                      ({"seed": -1}, "data.holdout.seed"),
                      ({"cases": "a.json", "seed": 1}, "data.holdout"),
                      ({"cases": 3}, "data.holdout.cases"),
                      ([0.2], "data.holdout")):
        with pytest.raises(ConfigError, match=f"'{key}'"):
            holdout_rule(spec, "data.holdout")
    with pytest.raises(ConfigError, match="did you mean 'test_fraction'"):
        holdout_rule({"test_fracton": 0.2})


def test_held_out_cases_from_a_splits_json_or_a_list(tmp_path):
    splits = make_splits(IDS, seed=2)
    (tmp_path / "splits.json").write_text(json.dumps(splits.as_dict()))
    (tmp_path / "ids.json").write_text(json.dumps(["case_004", "case_001"]))
    assert held_out_cases({"cases": str(tmp_path / "splits.json")}, IDS)[0] == splits.test
    assert held_out_cases({"cases": str(tmp_path / "ids.json")}, IDS)[0] == ["case_001",
                                                                             "case_004"]
    (tmp_path / "other.json").write_text(json.dumps(["case_001", "x_9"]))
    with pytest.raises(DataError, match=r"other.json: lists 1 case\(s\) the dataset does not "
                       r"have.*\['x_9'\]"):
        held_out_cases({"cases": str(tmp_path / "other.json")}, IDS)
    (tmp_path / "bad.json").write_text(json.dumps({"train": []}))
    with pytest.raises(DataError, match="a splits.json .* with keys \\['train'\\]"):
        held_out_cases({"cases": str(tmp_path / "bad.json")}, IDS)
    with pytest.raises(DataError, match="not found"):
        held_out_cases({"cases": str(tmp_path / "none.json")}, IDS)
    with pytest.raises(DataError, match="needs labelled cases and the dataset has none"):
        held_out_cases({"test_fraction": 0.2}, [], all_ids=IDS)


def test_prepare_never_reads_a_held_out_case_and_matches_finetune(tmp_path, rng, caplog):
    src = write_decathlon(tmp_path / "src", 10, rng, size=8, channels=1, n_test=2)
    # Fine-tuning splits the labelled cases of the prepared labelled data.
    labelled = prepare_dataset(src, tmp_path / "labelled", progress=False)
    finetune_test = make_splits([c["id"] for c in labelled.cases], seed=1).test
    assert len(finetune_test) == 2
    for case_id in finetune_test:  # unreadable: a prepare that opened one would fail
        (src / "imagesTr" / f"{case_id}.nii.gz").write_bytes(b"not a volume")
    with caplog.at_level(logging.INFO, logger="ssl3d_keras"):
        manifest = prepare_dataset(src, tmp_path / "pretrain", progress=False, unlabelled=True,
                                   holdout={"test_fraction": 0.2, "seed": 1})
    assert "held out 2 cases for downstream testing" in caplog.text
    ids = [c["id"] for c in manifest.cases]
    assert manifest.skipped == [] and not set(ids) & set(finetune_test)
    assert sorted(ids + finetune_test) == [f"case_{i:03d}" for i in range(12)]  # + imagesTs
    assert manifest.held_out == {"rule": {"test_fraction": 0.2, "seed": 1, "min_test": 1},
                                 "ids": finetune_test}
    assert Manifest.read(tmp_path / "pretrain").held_out == manifest.held_out
    # The same cases from the fine-tuning run's splits.json.
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps(make_splits([c["id"] for c in labelled.cases],
                                             seed=1).as_dict()))
    again = prepare_dataset(src, tmp_path / "pretrain2", progress=False,
                            holdout={"cases": str(splits)})
    assert again.held_out["ids"] == finetune_test and len(again.cases) == 8


def test_slices_are_held_out_with_their_volume(tmp_path, rng):
    src = write_decathlon(tmp_path / "src", 5, rng, size=8, channels=1)
    manifest = prepare_dataset(src, tmp_path / "out", layout="slices", progress=False,
                               holdout={"test_fraction": 0.2, "seed": 0})
    (held,) = manifest.held_out["ids"]
    assert held == make_splits([f"case_{i:03d}" for i in range(5)], seed=0).test[0]
    volumes = {c["id"].split("/")[0] for c in manifest.cases}
    assert len(manifest.cases) == 4 * 8 and held not in volumes


def test_check_selection_of_an_already_prepared_folder():
    manifest = Manifest(dim=3, channels=1, source="prep",
                        held_out={"rule": {"test_fraction": 0.2, "seed": 0, "min_test": 1},
                                  "ids": ["a"]},
                        preprocessing={"discover": {"unlabelled": True}})
    check_selection(manifest, holdout={"test_fraction": 0.2}, include_unlabelled=True)
    check_selection(manifest)  # a run may read held-out-free data without asking for it
    with pytest.raises(ConfigError, match=r"'data.holdout'.*prepared with holdout \{'test_"):
        check_selection(manifest, holdout={"test_fraction": 0.2, "seed": 1})
    bare = Manifest(dim=3, channels=1, source="prep")
    with pytest.raises(ConfigError, match="'data.holdout'.*prepared with holdout None"):
        check_selection(bare, holdout={})
    with pytest.raises(ConfigError, match="'data.include_unlabelled'"):
        check_selection(bare, include_unlabelled=True)
