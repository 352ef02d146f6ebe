"""`ssl3d pretrain` through click's CliRunner, at tiny sizes."""

import json

import pytest
from click.testing import CliRunner

from ssl3d_keras.cli.main import cli
from ssl3d_keras.training.logging import read_metrics

TINY = ["--steps", "4", "--batch-size", "2", "--input-size", "16",
        "--set", "encoder.depth=1", "--set", "encoder.base_filters=2",
        "--set", "task_config.head_units=[8]", "--set", "data.phantoms.n=4",
        "--set", "data.phantoms.size=16", "--set", "checkpoint_every=2", "--set", "log_every=2"]


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_lists_every_option_with_its_default():
    result = invoke("pretrain", "--help")
    assert result.exit_code == 0
    for option in ("--data", "--config", "--out", "--steps", "--epochs", "--batch-size",
                   "--input-size", "--dim", "--seed", "--resume", "--learning-rate",
                   "--strategy", "--precision", "--set"):
        assert option in result.output
    assert "Default: 300" in result.output and "phantoms" in result.output


def test_tiny_run_then_resume(tmp_path):
    out = tmp_path / "run"
    result = invoke("pretrain", "rotation", "--out", str(out), "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    assert f"Run directory: {out}" in result.output
    assert "Final proxy accuracy" in result.output and "(chance 0.100)" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["depth"] == 1 and config["data"]["input_size"] == 16
    assert config["task_config"] == {"head_units": [8], "head_dropout": 0.0}  # quick config
    assert [r["step"] for r in read_metrics(out / "metrics.csv")] == [2, 4]

    # starting again in the same folder without --resume is refused
    again = CliRunner().invoke(cli, ["pretrain", "rotation", "--out", str(out), *TINY])
    assert again.exit_code == 2 and "--resume" in again.output

    # --resume with a changed option names the key; plain --resume uses the stored config
    changed = CliRunner().invoke(cli, ["pretrain", "rotation", "--out", str(out), "--resume",
                                       "--seed", "7"])
    assert changed.exit_code == 2 and "seed" in changed.output
    resumed = invoke("pretrain", "rotation", "--out", str(out), "--resume", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert "after 4 steps" in resumed.output


def test_config_file_overrides_and_2d(tmp_path):
    config_file = tmp_path / "recipe.toml"
    config_file.write_text('seed = 3\n[optimizer]\nlearning_rate = 0.001\n')
    out = tmp_path / "run"
    result = invoke("pretrain", "rotation", "--config", str(config_file), "--out", str(out),
                    "--quiet", *TINY, "--dim", "2", "--set", "optimizer.schedule=cosine")
    assert result.exit_code == 0, result.output
    assert "(chance 0.250)" in result.output  # 2D rotation: 4 classes
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["dim"] == 2
    assert config["seed"] == 3 and config["optimizer"]["learning_rate"] == 0.001
    assert config["optimizer"]["schedule"] == "cosine"


@pytest.mark.parametrize("args, needle", [
    (["--set", "encoder_typo.depth=1"], "encoder_typo"),
    (["--set", "optimizer.lerning_rate=1"], "optimizer.lerning_rate"),
    (["--steps", "3", "--epochs", "2"], "not both"),
    (["--resume"], "nothing to resume: no config.json in this folder. Start the run without "
                   "--resume"),
])
def test_bad_input_is_one_line_with_exit_2(tmp_path, args, needle):
    result = CliRunner().invoke(cli, ["pretrain", "rotation", "--out", str(tmp_path / "r"),
                                      *args])
    assert result.exit_code == 2
    assert needle in result.output


def test_unknown_task_suggests_the_closest(tmp_path):
    result = CliRunner().invoke(cli, ["pretrain", "rotaton", "--out", str(tmp_path / "r"),
                                      *TINY])
    assert result.exit_code == 2 and "did you mean 'rotation'" in result.output


@pytest.mark.slow
@pytest.mark.subprocess
def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "ssl3d_keras", "pretrain", "rotation", "--out", str(out),
            *TINY, "--steps", "100000", "--set", "log_every=1", "--set", "checkpoint_every=100000"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (out / "metrics.csv").is_file() and len(read_metrics(out / "metrics.csv")) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert "Resume with" in stdout and "--resume" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    stopped = summary["steps"]
    assert summary["latest_checkpoint"].endswith(f"ckpt-{stopped}")
    rows = read_metrics(out / "metrics.csv")
    assert rows[-1]["step"] == stopped


def test_a_zoo_recipe_is_a_config_file(tmp_path):
    from pathlib import Path

    recipe = Path(__file__).parents[2] / "zoo" / "phantom-rotation.toml"
    out = tmp_path / "run"
    result = invoke("pretrain", "rotation", "--config", str(recipe), "--out", str(out),
                    "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["task_config"]["rotations"] == "paper"  # from the recipe's [pretrain] table
    assert config["steps"] == 4  # the command line wins
    result = CliRunner().invoke(cli, ["pretrain", "jigsaw", "--config", str(recipe),
                                      "--out", str(tmp_path / "other")])
    assert result.exit_code == 2
    assert "pretrains 'rotation', not 'jigsaw'" in result.output


def test_switching_architecture_drops_the_other_networks_encoder_keys():
    from ssl3d_keras.cli.pretrain import reset_encoder_for_new_architecture

    base = {"encoder": {"depth": 2, "base_filters": 8}}
    data = reset_encoder_for_new_architecture(
        json.loads(json.dumps(base)), ["encoder.architecture=densenet121", "steps=3"])
    assert data["encoder"] == {}
    # Same architecture, or none named: the base keys stay.
    assert reset_encoder_for_new_architecture(
        json.loads(json.dumps(base)), ["encoder.architecture=unet"]) == base
    assert reset_encoder_for_new_architecture(
        json.loads(json.dumps(base)), ["encoder.depth=3"]) == base


def test_resume_can_train_longer_with_a_new_learning_rate(tmp_path):
    out = tmp_path / "run"
    assert invoke("pretrain", "rotation", "--out", str(out), "--quiet", *TINY).exit_code == 0
    result = invoke("pretrain", "rotation", "--out", str(out), "--resume", "--quiet",
                    "--steps", "6", "--learning-rate", "0.001")
    assert result.exit_code == 0, result.output
    assert "after 6 steps" in result.output
    assert "Warning: Resuming at step 4 with steps=6 instead of 4" in result.output
    assert "learning_rate=0.001 instead of 0.003" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == 6 and config["optimizer"]["learning_rate"] == 0.001
    assert [c["key"] for c in config["resumed_changes"]] == ["optimizer.learning_rate", "steps"]
    assert [r["lr"] for r in read_metrics(out / "metrics.csv")] == pytest.approx(
        [0.003, 0.003, 0.001])
    # stopping before the step reached, or changing another key, stays an error
    early = CliRunner().invoke(cli, ["pretrain", "rotation", "--out", str(out), "--resume",
                                     "--steps", "5"])
    assert early.exit_code == 2 and "config key 'steps'" in early.output


def test_a_second_run_into_the_same_out_is_refused(tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    out.mkdir()
    hold = ("import sys\nfrom ssl3d_keras.training.lock import RunLock\n"
            "with RunLock(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(cli, ["pretrain", "rotation", "--out", str(out), *TINY])
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert result.exit_code == 2
    assert f"in use by another run: pid {holder.pid} on host {os.uname().nodename}" in (
        result.output)
    assert not (out / "config.json").exists()


def test_an_output_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    import tensorflow as tf

    from ssl3d_keras.training.checkpoints import RunCheckpoints

    def full(self, step):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(RunCheckpoints, "save", full)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["pretrain", "rotation", "--out", str(out), "--quiet",
                                      *TINY])
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.count("\n") == 0 and line.startswith(f"Error: {out / 'checkpoints'}: ")
    assert "No space left on device" in line and "no checkpoint had been saved yet" in line


def test_a_raw_os_error_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(cli, ["pretrain", "rotation", "--out", str(blocker / "run"),
                                      *TINY])
    assert result.exit_code in (1, 2)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert str(blocker) in result.output


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_real_runs_into_one_out_and_sigterm(tmp_path):
    """A second `ssl3d pretrain --out SAME` is refused while the first trains; SIGTERM then
    saves the first one's checkpoint and prints how to resume it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "ssl3d_keras", "pretrain", "rotation", "--out", str(out),
            *TINY, "--steps", "100000", "--set", "log_every=1", "--set", "checkpoint_every=100000"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (out / "metrics.csv").is_file() and len(read_metrics(out / "metrics.csv")) >= 2:
            break
        time.sleep(0.2)
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    first.send_signal(signal.SIGTERM)
    stdout, stderr = first.communicate(timeout=300)
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"in use by another run: pid {first.pid}" in second.stderr
    assert first.returncode == 130, stderr[-2000:]
    assert f"Resume with:\n  ssl3d pretrain rotation --out {out} --resume" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["latest_checkpoint"].endswith(f"ckpt-{summary['steps']}")
    steps = [r["step"] for r in read_metrics(out / "metrics.csv")]
    assert steps == list(range(1, summary["steps"] + 1))  # one writer: every step once
    assert not (out / "run.lock").exists()
