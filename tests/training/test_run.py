"""resolve_config: a raw dataset is prepared for the run with its unlabelled and held-out cases."""

import logging

import numpy as np
import pytest

from ssl3d_keras.data.manifest import Manifest
from ssl3d_keras.downstream.splits import make_splits
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.training.run import resolve_config
from tests.data.helpers_nifti import write_decathlon


def _config(path, **data):
    return {"task": "rotation", "encoder": {"depth": 2, "base_filters": 4},
            "data": {"path": str(path), "input_size": 8, **data}}


def test_pretraining_holds_out_finetunes_test_cases_and_adds_unlabelled(tmp_path, caplog):
    src = write_decathlon(tmp_path / "src", 10, np.random.default_rng(0), size=8, channels=1,
                          n_test=3)
    test = make_splits([f"case_{i:03d}" for i in range(10)], seed=5).test  # what finetune tests
    for case_id in test:  # unreadable: preparing one would fail the run
        (src / "imagesTr" / f"{case_id}.nii.gz").write_bytes(b"held out")
    with caplog.at_level(logging.INFO, logger="ssl3d_keras"):
        config = resolve_config(_config(src, include_unlabelled=True,
                                        holdout={"test_fraction": 0.2, "seed": 5}),
                                tmp_path / "run", verbose=False)
    assert "held out 2 cases for downstream testing" in caplog.text
    manifest = Manifest.read(config.data.prepared)
    assert manifest.held_out["ids"] == test
    ids = [c["id"] for c in manifest.cases]
    assert not set(ids) & set(test) and {"case_010", "case_011", "case_012"} <= set(ids)
    assert config.data.resolved.examples_per_epoch == 10 - 2 + 3
    # Resuming reuses OUT/prepared, which must hold the same selection.
    resolve_config(_config(src, include_unlabelled=True, holdout={"test_fraction": 0.2,
                                                                  "seed": 5}),
                   tmp_path / "run", verbose=False)
    with pytest.raises(ConfigError, match="'data.holdout'"):
        resolve_config(_config(src, include_unlabelled=True, holdout={"seed": 6}),
                       tmp_path / "run", verbose=False)


def test_a_prepared_folder_without_the_selection_is_refused(tmp_path, caplog):
    src = write_decathlon(tmp_path / "src", 4, np.random.default_rng(0), size=8, channels=1,
                          n_test=1)
    resolve_config(_config(src), tmp_path / "run", verbose=False)
    prepared = tmp_path / "run" / "prepared"
    assert Manifest.read(prepared).held_out is None
    resolve_config(_config(prepared), tmp_path / "run2", verbose=False)
    with pytest.raises(ConfigError, match="'data.holdout'.*give the raw dataset"):
        resolve_config(_config(prepared, holdout={}), tmp_path / "run2", verbose=False)
    with pytest.raises(ConfigError, match="'data.include_unlabelled'"):
        resolve_config(_config(prepared, include_unlabelled=True), tmp_path / "run2",
                       verbose=False)
    with caplog.at_level(logging.WARNING, logger="ssl3d_keras"):
        config = resolve_config({"data": {"holdout": {}}}, tmp_path / "run3", verbose=False)
    assert config.data.prepared is None and "the synthetic phantoms ignore them" in caplog.text
