"""The data-efficiency experiment end to end at toy size, and that it resumes without rework."""

import pytest

from ssl3d_keras.downstream import experiment
from ssl3d_keras.downstream.report import read_rows
from ssl3d_keras.errors import ConfigError

TINY_ENCODER = {"depth": 2, "base_filters": 4, "dropout": 0.0}


def _tiny():
    return experiment.ExperimentConfig(
        tasks=["rotation"], include_2d=True, fractions=[1.0], repeats=1,
        pretrain_steps=3, pretrain_phantoms={"n": 4, "size": 24, "seed": 0},
        finetune={"steps": 3, "warmup_steps": 1, "batch_size": 2, "patch_size": 16,
                  "scratch_encoder": TINY_ENCODER, "log_every": 1,
                  "evaluation": {"validate_every": 0, "write_predictions": False},
                  "data": {"phantoms": {"n": 8, "size": 24}}})


def test_every_cell_is_scored_on_the_same_test_cases_and_reported(tmp_path, monkeypatch):
    out = tmp_path / "exp"
    result = experiment.run_experiment(_tiny(), out, verbose=False)
    rows = read_rows(out / "results.csv")
    methods = {"rotation-3d", "rotation-2d", "scratch", "scratch-2d"}
    assert {r["method"] for r in rows} == methods
    cells = {(r["method"], r["fraction"]) for r in rows}
    assert len(cells) == 4
    cases = {frozenset(r["case"] for r in rows if (r["method"], r["fraction"]) == cell)
             for cell in cells}
    assert len(cases) == 1  # one fixed test split for every method and fraction
    for name in ("results.md", "dice.png", "experiment.json"):
        assert (out / name).is_file()
    for method in methods:
        assert method in result["report"]
    assert (out / "encoders" / "rotation-2d" / "preset" / "config.json").is_file()

    # A second run finds every cell done and recomputes nothing.
    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(experiment, "_run_cell", must_not_run)
    monkeypatch.setattr(experiment, "_pretrain_encoder",
                        lambda task, dim, *a, **k: out / "encoders" / f"{task}-{dim}d")
    experiment.run_experiment(_tiny(), out, verbose=False)
    assert len(read_rows(out / "results.csv")) == len(rows)


def test_bad_settings_fail_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'rotation'"):
        experiment.run_experiment({"tasks": ["rotaton"]}, tmp_path / "a", verbose=False)
    with pytest.raises(ConfigError, match="fractions"):
        experiment.run_experiment({"fractions": [0]}, tmp_path / "b", verbose=False)
    assert not (tmp_path / "a").exists()
