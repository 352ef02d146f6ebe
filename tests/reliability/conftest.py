"""Uninterrupted reference runs the kill tests compare against, made once per session."""

import dataclasses
from pathlib import Path

import pytest

from tests.reliability.harness import (
    PREPARE_ARGS,
    PRETRAIN_TINY,
    checkpoint_tensors,
    invoke,
    latest_checkpoint,
    run_ssl3d,
    timed,
)


@dataclasses.dataclass
class Reference:
    """An uninterrupted run: its folder, its last checkpoint's tensors, its wall time."""

    run: Path
    tensors: dict
    seconds: float


@pytest.fixture(scope="session")
def pretrain_reference(tmp_path_factory):
    """The tiny pretraining run (`harness.PRETRAIN_TINY`), uninterrupted."""
    root = tmp_path_factory.mktemp("reference")
    run = root / "run"
    outcome, seconds = timed(run_ssl3d, ["pretrain", "rotation", "--out", run, "--quiet",
                                         *PRETRAIN_TINY], root / "trace")
    assert outcome.returncode == 0, outcome.describe()
    return Reference(run, checkpoint_tensors(latest_checkpoint(run)), seconds)


@pytest.fixture(scope="session")
def raw_phantoms(tmp_path_factory):
    """Six 16^3 phantoms with labels as a Decathlon folder (the input of `ssl3d prepare`)."""
    from ssl3d_keras.data.phantoms import write_phantom_dataset

    return write_phantom_dataset(tmp_path_factory.mktemp("raw") / "phantoms", 6, size=16,
                                 seed=0)


@pytest.fixture(scope="session")
def prepare_reference(tmp_path_factory, raw_phantoms):
    """`ssl3d prepare` of `raw_phantoms` into 3 shards of 2 cases, uninterrupted."""
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    outcome = invoke(["prepare", raw_phantoms, "--out", out, *PREPARE_ARGS])
    assert outcome.returncode == 0, outcome.describe()
    return out
