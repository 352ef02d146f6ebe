"""The performance suite: FLOP counting, the bare-Keras reference, targets and reports."""

import copy
import json

import keras
import numpy as np
import pytest

from ssl3d_keras import tasks
from ssl3d_keras.benchmark import speed, speed_suite
from ssl3d_keras.errors import ConfigError


def test_flops_of_convolutions_and_dense_layers_match_hand_counts():
    model = keras.Sequential([
        keras.Input((6, 8, 10, 2)),
        keras.layers.Conv3D(4, 3, padding="valid"),   # out 4 x 6 x 8 x 4, kernel 3^3 x 2
        keras.layers.Flatten(),
        keras.layers.Dense(5),
    ])
    batch = 3
    conv = 2 * batch * (4 * 6 * 8 * 4) * (27 * 2)
    dense = 2 * batch * (4 * 6 * 8 * 4) * 5
    x = np.zeros((batch, 6, 8, 10, 2), "float32")
    assert speed.conv_and_matmul_flops(model, x) == conv + dense


def test_flops_of_2d_convolutions_with_stride():
    model = keras.Sequential([keras.Input((9, 9, 3)), keras.layers.Conv2D(2, 3, strides=2)])
    x = np.zeros((1, 9, 9, 3), "float32")
    assert speed.conv_and_matmul_flops(model, x) == 2 * (4 * 4 * 2) * (9 * 3)


def test_the_bare_keras_reference_is_our_rotation_model_layer_for_layer():
    # Same layers in the same order: the same parameter count, and the same
    # shapes of every weight, as the paper encoder with the rotation head.
    size = 32
    ours = tasks.get("rotation", input_shape=(size,) * 3 + (1,), encoder={}).build_from_example()
    reference = speed.reference_rotation_model(size)
    assert reference.count_params() == ours.count_params()
    assert sorted(tuple(w.shape) for w in reference.weights) == sorted(tuple(w.shape) for w in ours.weights)
    x = np.zeros((2, size, size, size, 1), "float32")
    assert speed.conv_and_matmul_flops(reference, x) == speed.conv_and_matmul_flops(ours, x)


def test_plan_defaults_follow_the_authors_batches_and_the_encoder_minimum():
    plan = speed_suite.make_plan()
    assert plan.batches == speed.PAPER_BATCH
    assert plan.sizes["rotation"] == 64 and plan.sizes["cpc"] == 128
    assert plan.encoder == {}
    quick = speed_suite.make_plan(["rotation"], quick=True)
    assert quick.sizes == {"rotation": 32} and quick.encoder["depth"] == 2
    assert speed_suite.make_plan(["rotation", "rpl"], sizes=[48, 96]).sizes == {"rotation": 48,
                                                                                "rpl": 96}


@pytest.mark.parametrize("kwargs, key", [({"tasks": ["rotaton"]}, "tasks"),
                                         ({"tasks": ["rotation", "rpl"], "sizes": [1, 2, 3]},
                                          "sizes")])
def test_plan_errors_name_the_option(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        speed_suite.make_plan(**kwargs)


def _results(rotation_e2e=(50.0, 70.0), model_rate=60.0, rss=(1000.0, 1050.0, 900.0)):
    """A hand-made results dict shaped like `run_speed_suite`'s."""
    def e2e(rate, precision):
        return {"kind": "end_to_end", "task": "rotation", "size": 64, "batch_size": 4,
                "precision": precision, "examples_per_sec": rate, "peak_rss_mb": 1000.0}

    return {
        "machine": {"platform": "test", "cpu_count": 2},
        "plan": {"sizes": {"rotation": 64}, "reference_size": 64},
        "ceiling": {"kind": "ceiling", "gflops": 400.0},
        "compare": {"size": 64, "batch_size": 4,
                    "reference": {"median_step_sec": 0.1, "examples_per_sec": 40.0},
                    "float32": {"median_step_sec": 0.08, "examples_per_sec": 50.0,
                                "rate_vs_reference": 1.25}},
        "reference_memory": {"kind": "reference_memory", "peak_rss_mb": rss[2]},
        "tasks": {"rotation": {
            "model": {"kind": "model", "task": "rotation", "size": 64, "batch_size": 4,
                      "examples_per_sec": model_rate, "median_step_sec": 4 / model_rate,
                      "step_flops": 3e11, "achieved_gflops": 200.0, "peak_rss_mb": rss[0]},
            "pipeline": {"kind": "pipeline", "task": "rotation", "examples_per_sec": 900.0},
            "end_to_end": {"float32": e2e(rotation_e2e[0], "float32"),
                           "mixed_bfloat16": e2e(rotation_e2e[1], "mixed_bfloat16")}}},
        "scaling": [{"kind": "scaling", "volumes": 10, "epoch_sec": 1.0, "peak_rss_mb": rss[0]},
                    {"kind": "scaling", "volumes": 1000, "epoch_sec": 100.0,
                     "peak_rss_mb": rss[1]}],
    }


def test_targets_compare_the_measured_ratios_with_their_goals():
    targets = {t["target"]: t for t in speed_suite.check_targets(_results())}
    best = targets["rotation end-to-end (best precision) / bare-Keras float32"]
    assert best["value"] == pytest.approx(70 / 40) and best["met"] is True
    f32 = targets["rotation end-to-end float32 / bare-Keras float32"]
    assert f32["value"] == pytest.approx(50 / 40) and f32["met"] is True
    pipeline = targets["rotation: end-to-end float32 / model-only float32"]
    assert pipeline["value"] == pytest.approx(50 / 60) and pipeline["met"] is False
    memory = targets["peak RSS: our rotation step / bare-Keras"]
    assert memory["value"] == pytest.approx(1000 / 900) and memory["met"] is False
    scaling = targets["peak RSS: 1000 / 10 volumes"]
    assert scaling["value"] == pytest.approx(1.05) and scaling["met"] is True


def test_a_failed_measurement_is_reported_not_counted_as_met():
    results = _results()
    results["tasks"]["rotation"]["end_to_end"]["float32"] = {"kind": "end_to_end",
                                                             "error": "boom"}
    targets = {t["target"]: t for t in speed_suite.check_targets(results)}
    assert targets["rotation end-to-end float32 / bare-Keras float32"]["met"] is None
    assert "boom" in speed_suite.markdown_report(results)


def test_report_files_hold_every_measurement(tmp_path):
    results = _results()
    results["workers"] = [{"workers": 1, "batch_size": 8, "examples_per_sec": 60.0},
                          {"workers": 2, "batch_size": 8, "examples_per_sec": 24.0}]
    results["inference"] = {"size": 128, "window": 64, "overlap": 0.5, "windows": 27,
                            "median_volume_sec": 20.0, "volumes_per_sec": 0.05,
                            "windows_per_sec": 1.35}
    results["targets"] = speed_suite.check_targets(results)
    paths = speed_suite.write_speed_report(copy.deepcopy(results), tmp_path)
    assert json.loads(open(paths["json"]).read())["ceiling"]["gflops"] == 400.0
    rows = open(paths["csv"]).read().splitlines()
    assert len(rows) == 1 + len(speed_suite.flat_rows(results))
    markdown = open(paths["md"]).read()
    assert "| rotation | 64^3 | 4 |" in markdown and "MFU" in markdown
    assert "50%" in markdown  # 200 achieved / 400 ceiling GFLOP/s
    assert "| 2 | 8 | 24.0 | 0.40 |" in markdown  # two loopback workers against one
    assert "| 128^3 | 64^3 | 0.5 | 27 | 20.00 | 0.050 | 1.4 |" in markdown
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_an_isolated_measurement_runs_in_its_own_process_and_reports_its_memory():
    result = speed.run_isolated("ceiling", n=256, repeats=2)
    assert result["kind"] == "ceiling" and result["gflops"] > 0
    assert result["peak_rss_mb"] > 50  # TensorFlow alone is far more than this
    failed = speed.run_isolated("ceiling", n=256, nonsense=1)
    assert "nonsense" in failed["error"]
