"""The training-speed benchmark (ssl3d_keras.benchmark.train)."""

import pytest

from ssl3d_keras.benchmark.train import compare_training, format_results, measure_training

TINY_ENCODER = {"depth": 1, "base_filters": 2, "norm": "none", "dropout": 0.0}


def test_measure_training_reports_consistent_figures():
    result = measure_training(task="rotation", size=16, batch_size=2, steps=3,
                              encoder=TINY_ENCODER, task_config={"head_units": [8]}, warmup=1)
    assert result["precision"] == "float32" and result["jit_compile"] is False
    assert 0 < result["min_step_sec"] <= result["median_step_sec"]
    assert result["examples_per_sec"] == pytest.approx(2 / result["median_step_sec"])
    assert result["parameters"] > 0


def test_compare_training_covers_each_setting():
    results = compare_training(precisions=("float32", "mixed_bfloat16"), jit=(False,),
                               task="rotation", size=16, batch_size=2, steps=2,
                               encoder=TINY_ENCODER, task_config={"head_units": [8]}, warmup=1)
    assert [(r["precision"], r["jit_compile"]) for r in results] == [
        ("float32", False), ("mixed_bfloat16", False)]
    assert results[0]["speedup"] == 1.0
    table = format_results(results)
    assert "mixed_bfloat16" in table and len(table.splitlines()) == 3
