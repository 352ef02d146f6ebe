"""Shared test set-up: quiet TensorFlow, seeded randomness, temp data helpers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    """A numpy Generator with a fixed seed, fresh for each test."""
    return np.random.default_rng(1234)


@pytest.fixture
def nibabel_data():
    """Folder of the NIfTI test files that ship inside nibabel's wheel."""
    import nibabel.tests

    return os.path.join(os.path.dirname(nibabel.tests.__file__), "data")
