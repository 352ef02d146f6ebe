"""The memory row: peak resident memory of training steps, and the kernel's peak counter."""

import numpy as np

from ssl3d_keras.benchmark.memory import (
    current_rss_mb,
    proc_status_mb,
    reset_peak_rss,
    training_memory,
)

TINY = {"depth": 1, "base_filters": 2, "norm": "batch", "dropout": 0.0}


def test_the_restarted_peak_counts_what_was_allocated_since():
    assert reset_peak_rss()
    before = current_rss_mb()
    block = np.ones(200 * 2**20 // 8)  # 200 MiB, every page touched
    held = current_rss_mb()
    del block
    peak = proc_status_mb("VmHWM")
    assert held - before > 190
    assert peak - before > 190 and current_rss_mb() < peak - 150


def test_training_memory_reports_its_settings_and_a_consistent_peak():
    result = training_memory(task="rotation", size=16, batch_size=2, remat=True, encoder=TINY,
                             steps=2, task_config={"head_units": []})
    assert result["encoder"] == {**TINY, "remat": True} and result["remat"] is True
    assert result["build_peak_rss_mb"] >= result["baseline_rss_mb"] > 0
    assert result["steps_peak_mb"] >= 0 and result["median_step_sec"] > 0
