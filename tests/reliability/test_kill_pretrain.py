"""`ssl3d pretrain` killed (SIGKILL), stopped (SIGTERM, SIGINT) or starved of disk, then resumed.

Whatever the moment, the resumed run ends on the same bits as the uninterrupted reference
(weights, optimiser slots, BatchNorm statistics, dropout seed states, step), no checkpoint the
index names is partial, and no more than one checkpoint interval of steps is lost. The
default suite keeps a few moments; the whole matrix runs with `-m slow`.
"""

import json
import random
import shutil
import subprocess

import pytest

from tests.reliability.harness import (
    CHECKPOINT_EVERY,
    PRETRAIN_STEPS,
    PRETRAIN_TINY,
    assert_checkpoints_whole,
    assert_same_tensors,
    checkpoint_step,
    checkpoint_tensors,
    latest_checkpoint,
    metrics_steps,
    run_ssl3d,
)

pytestmark = pytest.mark.reliability


def start(run, trace, *extra, **kill):
    return run_ssl3d(["pretrain", "rotation", "--out", run, "--quiet", *PRETRAIN_TINY, *extra],
                     trace, **kill)


def judge_killed(run, outcome):
    """After a kill: every indexed checkpoint whole, at most one interval of steps lost.

    Returns the step of the latest checkpoint (0 if none).
    """
    saved = assert_checkpoints_whole(run) if run.is_dir() else 0
    lost = outcome.last_step - saved
    assert 0 <= lost <= CHECKPOINT_EVERY, (
        f"trained to step {outcome.last_step}, latest checkpoint {saved}: {outcome.describe()}")
    return saved


def resume(run, trace, *extra, **kill):
    """What a user does after a kill: `--resume`; a run that never wrote its config is
    started again (the CLI says there is nothing to resume)."""
    outcome = run_ssl3d(["pretrain", "rotation", "--out", run, "--resume", *extra], trace,
                        **kill)
    if outcome.returncode == 2 and "nothing to resume" in outcome.stderr:
        assert not latest_checkpoint(run), outcome.describe()
        outcome = start(run, trace, **kill)
    return outcome


def judge_resumed(run, outcome, reference, saved):
    assert outcome.returncode == 0, outcome.describe()
    assert f"after {PRETRAIN_STEPS} steps" in outcome.stdout, outcome.describe()
    if saved:
        assert f"from step {saved} " in outcome.stdout, outcome.describe()
    assert metrics_steps(run) == list(range(1, PRETRAIN_STEPS + 1))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == PRETRAIN_STEPS
    final = latest_checkpoint(run)
    assert checkpoint_step(final) == PRETRAIN_STEPS
    assert_same_tensors(reference.tensors, checkpoint_tensors(final))


def kill_and_resume(tmp_path, reference, *extra, **kill):
    run = tmp_path / "run"
    killed = start(run, tmp_path / "killed.trace", *extra, **kill)
    assert killed.killed, killed.describe()
    saved = judge_killed(run, killed)
    resumed = resume(run, tmp_path / "resumed.trace")
    judge_resumed(run, resumed, reference, saved)
    return killed, saved


# --- the default suite: one kill inside a C++ checkpoint write, the signals, a full disk -----

@pytest.mark.subprocess
def test_sigkill_while_a_checkpoint_is_written_resumes_bit_identical(tmp_path,
                                                                     pretrain_reference):
    # ckpt-8's data file is being written under ckpt-8_temp/ when the process dies.
    killed, saved = kill_and_resume(tmp_path, pretrain_reference,
                                    watch=str(tmp_path / "run/checkpoints/ckpt-8_temp*"))
    assert killed.hooks("watch") and killed.last_step == 8 and saved == 4


@pytest.mark.subprocess
def test_sigterm_saves_a_checkpoint_exits_130_and_prints_the_resume_command(
        tmp_path, pretrain_reference):
    run = tmp_path / "run"
    stopped = start(run, tmp_path / "stopped.trace", kill_at="step:6", send="SIGTERM")
    assert stopped.returncode == 130, stopped.describe()
    command = f"ssl3d pretrain rotation --out {run} --resume"
    assert command in stopped.stdout.splitlines()[-1], stopped.describe()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 6
    assert checkpoint_step(latest_checkpoint(run)) == 6  # no step lost
    assert assert_checkpoints_whole(run) == 6
    # The printed command, run as printed, finishes the run on the reference's bits.
    resumed = run_ssl3d(command.split()[1:], tmp_path / "resumed.trace")
    judge_resumed(run, resumed, pretrain_reference, 6)


@pytest.mark.subprocess
def test_a_write_failing_mid_checkpoint_keeps_the_previous_one(tmp_path, pretrain_reference):
    # From the second save on, no file may grow past 20 kB: ckpt-8's 47 kB data file fails
    # part-way, as on a full disk (EFBIG here, ENOSPC there: the same failed write(2)).
    run = tmp_path / "run"
    failed = start(run, tmp_path / "failed.trace", fsize="save:2:20000")
    assert failed.returncode == 2, failed.describe()
    error = failed.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("Error: "), failed.describe()
    assert "cannot write (File too large)" in error[0], error[0]  # the system's reason
    assert "ckpt-4" in error[0] and "intact" in error[0]
    assert assert_checkpoints_whole(run) == 4
    resumed = resume(run, tmp_path / "resumed.trace")
    judge_resumed(run, resumed, pretrain_reference, 4)


# --- the matrix (slow) ---------------------------------------------------------------------

# (id, kill arguments, extra command-line arguments). Hooks: see killshim.py.
MOMENTS = [
    ("before-config-rename", {"kill_at": "replace:1"}, ()),
    ("after-config-rename", {"kill_at": "replaced:1"}, ()),
    ("after-step-1", {"kill_at": "step:1"}, ()),
    ("between-steps", {"kill_at": "step:6"}, ()),
    ("mid-step", {"kill_at": "step:6:0.02"}, ()),
    ("before-save", {"kill_at": "save:2"}, ()),
    ("save-started", {"kill_at": "save:2:0.05"}, ()),
    ("first-checkpoint-data", {"watch": "run/checkpoints/ckpt-4_temp*"}, ()),
    ("checkpoint-merged", {"watch": "run/checkpoints/ckpt-8.index"}, ()),
    ("files-written-index-not", {"kill_at": "record:3"}, ()),
    ("index-written-before-sweep", {"kill_at": "record:4"}, ()),
    ("after-sweep-deleted-ckpt-4", {"kill_at": "record:4"}, ("--set", "keep_checkpoints=1")),
    ("after-save", {"kill_at": "saved:2"}, ()),
    ("final-checkpoint-data", {"watch": "run/checkpoints/ckpt-12_temp*"}, ()),
    ("summary-being-written", {"kill_at": "replace:2"}, ()),
]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("moment, kill, extra", MOMENTS, ids=[m[0] for m in MOMENTS])
def test_sigkill_at_a_chosen_moment(tmp_path, pretrain_reference, moment, kill, extra):
    kill = {key: (str(tmp_path / value) if key == "watch" else value)
            for key, value in kill.items()}
    killed, _ = kill_and_resume(tmp_path, pretrain_reference, *extra, **kill)
    assert killed.hooks("kill") or killed.hooks("watch"), killed.describe()


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkill_twice_in_a_row(tmp_path, pretrain_reference):
    run = tmp_path / "run"
    first = start(run, tmp_path / "1.trace", watch=str(run / "checkpoints/ckpt-8_temp*"))
    assert first.killed and judge_killed(run, first) == 4
    second = resume(run, tmp_path / "2.trace", watch=str(run / "checkpoints/ckpt-12_temp*"))
    assert second.killed, second.describe()
    assert judge_killed(run, second) == 8
    judge_resumed(run, resume(run, tmp_path / "3.trace"), pretrain_reference, 8)


# Seeded random moments: from the process start to its end (TensorFlow's import, which takes
# most of the time, included), and within training: after a random step, a random delay on.
_RNG = random.Random(11)
RANDOM_KILLS = sorted(_RNG.uniform(0.05, 1.0) for _ in range(4))
RANDOM_STEPS = sorted((_RNG.randint(1, PRETRAIN_STEPS - 1), round(_RNG.uniform(0, 0.05), 3))
                      for _ in range(8))


def _judge_random(tmp_path, reference, killed):
    run = tmp_path / "run"
    if killed.returncode == 0:  # the kill came after the end: nothing to check but the result
        judge_resumed(run, resume(run, tmp_path / "resumed.trace"), reference, PRETRAIN_STEPS)
        return
    assert killed.killed, killed.describe()
    saved = judge_killed(run, killed)
    judge_resumed(run, resume(run, tmp_path / "resumed.trace"), reference, saved)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("share", RANDOM_KILLS, ids=[f"{s:.2f}" for s in RANDOM_KILLS])
def test_sigkill_at_a_random_moment(tmp_path, pretrain_reference, share):
    killed = start(tmp_path / "run", tmp_path / "killed.trace",
                   kill_after=share * pretrain_reference.seconds)
    _judge_random(tmp_path, pretrain_reference, killed)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("step, delay", RANDOM_STEPS, ids=[f"{k}+{d}s" for k, d in RANDOM_STEPS])
def test_sigkill_at_a_random_moment_of_training(tmp_path, pretrain_reference, step, delay):
    killed = start(tmp_path / "run", tmp_path / "killed.trace", kill_at=f"step:{step}:{delay}")
    _judge_random(tmp_path, pretrain_reference, killed)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigint_saves_and_exits_130(tmp_path, pretrain_reference):
    run = tmp_path / "run"
    stopped = start(run, tmp_path / "stopped.trace", kill_at="step:5", send="SIGINT")
    assert stopped.returncode == 130, stopped.describe()
    assert f"ssl3d pretrain rotation --out {run} --resume" in stopped.stdout
    assert checkpoint_step(latest_checkpoint(run)) == 5
    judge_resumed(run, resume(run, tmp_path / "resumed.trace"), pretrain_reference, 5)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_second_sigint_stops_at_once_and_keeps_the_last_checkpoint(tmp_path,
                                                                     pretrain_reference):
    run = tmp_path / "run"
    stopped = start(run, tmp_path / "stopped.trace", kill_at="step:6:0.0",
                    send="SIGINT,SIGINT")
    assert stopped.returncode != 0, stopped.describe()
    saved = judge_killed(run, stopped)
    judge_resumed(run, resume(run, tmp_path / "resumed.trace"), pretrain_reference, saved)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_while_a_checkpoint_is_written(tmp_path, pretrain_reference):
    run = tmp_path / "run"
    stopped = start(run, tmp_path / "stopped.trace", send="SIGTERM",
                    watch=str(run / "checkpoints/ckpt-8_temp*"))
    assert stopped.returncode == 130, stopped.describe()
    # The save under way finishes; the loop stops at the next step boundary and saves it.
    assert checkpoint_step(latest_checkpoint(run)) == 9
    assert assert_checkpoints_whole(run) == 9
    judge_resumed(run, resume(run, tmp_path / "resumed.trace"), pretrain_reference, 9)


def _mount_tmpfs(folder, size):
    folder.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}); the write-limit test covers this")


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, pretrain_reference):
    # A real ENOSPC: the run's folder is on a 16 MB tmpfs that the shim fills at the 2nd save.
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "16m")
    try:
        run = disk / "run"
        failed = start(run, tmp_path / "failed.trace", fill=f"save:2:{disk / 'filler'}")
        assert failed.returncode == 2, failed.describe()
        error = failed.stderr.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("Error: "), failed.describe()
        assert "cannot write" in error[0] and "ckpt-4" in error[0] and "intact" in error[0]
        assert assert_checkpoints_whole(run) == 4
        (disk / "filler").unlink()
        judge_resumed(run, resume(run, tmp_path / "resumed.trace"), pretrain_reference, 4)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)
        shutil.rmtree(disk, ignore_errors=True)
