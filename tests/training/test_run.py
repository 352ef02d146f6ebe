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


def _prepared_manifest(folder, shapes, channels):
    from ssl3d_keras.data.manifest import Manifest

    Manifest(dim=3, channels=channels,
             cases=[{"id": f"c{i}", "final_shape": list(s)} for i, s in enumerate(shapes)]
             ).write(folder)
    return str(folder)


def test_cache_auto_caches_what_fits_and_streams_what_does_not(tmp_path):
    from ssl3d_keras.training.config import PretrainConfig
    from ssl3d_keras.training.run import decoded_bytes, resolve_cache

    config = PretrainConfig()
    config.data.prepared = _prepared_manifest(tmp_path / "big", [(128, 128, 128)] * 1000, 1)
    # 1000 volumes of 128^3, float32 image and int32 label: 16 GiB, by hand.
    assert decoded_bytes(config) == 1000 * 128**3 * 4 * 2
    assert resolve_cache(config, memory_bytes=256 * 2**30) is False  # above the 4 GiB cap
    config.data.prepared = _prepared_manifest(tmp_path / "small", [(64, 64, 64)] * 10, 2)
    assert decoded_bytes(config) == 10 * 64**3 * 4 * 3
    assert resolve_cache(config, memory_bytes=8 * 2**30) is True
    assert resolve_cache(config, memory_bytes=2**24) is False  # a quarter of 16 MB is too little
    for explicit in (True, False):
        config.data.cache = explicit
        assert resolve_cache(config, memory_bytes=2**24) is explicit
