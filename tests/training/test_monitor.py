"""Monitoring during pretraining: held-out proxy scores, the downstream probe, the best checkpoint."""

import csv
import json
import math

import numpy as np
import pytest

from ssl3d_keras.training import load_run, pretrain


def tiny(**monitor):
    return {
        "task": "rotation",
        "task_config": {"head_units": [8], "head_dropout": 0.0},
        "encoder": {"depth": 2, "base_filters": 4, "norm": "batch", "dropout": 0.0},
        "data": {"input_size": 16, "phantoms": {"n": 4, "size": 24}},
        "steps": 6, "batch_size": 2, "checkpoint_every": 3, "log_every": 1,
        "monitor": {"every": 3, "validation_examples": 8, "validation_volumes": 2, **monitor},
    }


def _rows(run):
    with (run / "monitor.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_held_out_scores_are_logged_and_the_best_checkpoint_kept(tmp_path):
    run = tmp_path / "run"
    pretrain(tiny(), run, verbose=False)
    rows = _rows(run)
    assert [int(r["step"]) for r in rows] == [3, 6]
    for row in rows:
        assert math.isfinite(float(row["val_loss"])) and 0 <= float(row["val_accuracy"]) <= 1
        assert math.isnan(float(row["probe_dice"]))  # the probe is off
    best = json.loads((run / "best.json").read_text())
    assert best["metric"] == "val_accuracy"
    assert best["score"] == max(float(r["val_accuracy"]) for r in rows)
    assert (run / "checkpoints" / "best" / f"best-{best['step']}.index").is_file()
    task, _ = load_run(run, checkpoint="best")
    latest, _ = load_run(run)
    same = all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(task.weights, latest.weights,
                                                                     strict=True))
    assert same == (best["step"] == 6)


def test_the_held_out_examples_are_fixed(tmp_path):
    from ssl3d_keras.config import from_dict
    from ssl3d_keras.training import PretrainConfig
    from ssl3d_keras.training.monitor import PretrainMonitor
    from ssl3d_keras.training.run import build_task, resolve_config

    config = resolve_config(from_dict(PretrainConfig, tiny()), tmp_path, verbose=False)
    task = build_task(config)
    first = PretrainMonitor(config, task, None, tmp_path)
    second = PretrainMonitor(config, task, None, tmp_path)
    assert first.proxy_scores() == second.proxy_scores()
    for (a, x), (b, y) in zip(first.held_out, second.held_out, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(x, y)


def test_the_probe_scores_a_frozen_copy_and_leaves_pretraining_alone(tmp_path):
    from ssl3d_keras.downstream.probe import pretrain_with_probe
    from ssl3d_keras.errors import ConfigError

    run = tmp_path / "run"
    config = tiny(probe=True, probe_steps=2, probe_cases=6, probe_patch_size=16)
    with pytest.raises(ConfigError, match="monitor.probe"):
        pretrain(config, tmp_path / "no-probe", verbose=False)
    pretrain_with_probe(config, run, verbose=False)
    rows = _rows(run)
    assert all(0 <= float(r["probe_dice"]) <= 1 for r in rows)
    best = json.loads((run / "best.json").read_text())
    assert best["metric"] == "probe_dice"
    assert not list(run.glob(".probe-*"))  # the probe's scratch folders are removed

    # The same run without monitoring ends with bit-identical weights: the probe trains a copy.
    plain = tiny()
    plain.pop("monitor")
    pretrain(plain, tmp_path / "plain", verbose=False)
    a, _ = load_run(run)
    b, _ = load_run(tmp_path / "plain")
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_export_of_the_best_checkpoint(tmp_path):
    from click.testing import CliRunner

    from ssl3d_keras.cli.main import cli

    run = tmp_path / "run"
    pretrain(tiny(), run, verbose=False)
    result = CliRunner().invoke(cli, ["export", str(run), "--out", str(tmp_path / "x"),
                                      "--format", "preset", "--checkpoint", "best"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "x" / "preset" / "metadata.json").read_text())
    best = json.loads((run / "best.json").read_text())
    assert json.dumps(best["step"]) in json.dumps(meta)


def test_best_without_monitoring_is_a_clear_error(tmp_path):
    from ssl3d_keras.errors import DataError

    config = tiny()
    config.pop("monitor")
    pretrain(config, tmp_path / "run", verbose=False)
    with pytest.raises(DataError, match="monitor.every"):
        load_run(tmp_path / "run", checkpoint="best")
