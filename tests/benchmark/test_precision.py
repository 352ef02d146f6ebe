"""The precision row: float32 and mixed precision timed in turns."""

import math

import pytest

from ssl3d_keras.benchmark.precision import compare_precisions

TINY = {"depth": 1, "base_filters": 2, "norm": "batch", "dropout": 0.0}


def test_compare_precisions_times_each_in_turns_against_the_first():
    result = compare_precisions(task="rotation", size=16, batch_size=2, encoder=TINY, rounds=2,
                                steps=2, task_config={"head_units": []})
    first, second = result["float32"], result["mixed_bfloat16"]
    assert first["speedup"] == 1.0 and first["steps"] == second["steps"] == 4
    assert second["speedup"] == pytest.approx(first["median_step_sec"] / second["median_step_sec"])
    assert second["examples_per_sec"] == pytest.approx(2 / second["median_step_sec"])
    # the same weights and batch, so the same loss to bfloat16's precision at the start
    assert math.isfinite(second["last_loss"])
    assert second["first_loss"] == pytest.approx(first["first_loss"], rel=0.05)
