"""`ssl3d finetune` killed, then resumed: it ends on the bits of an uninterrupted run.

A tiny from-scratch segmentation run on phantoms: it writes the phantoms, prepares them,
trains 6 steps with a checkpoint every 2, scores the test case and writes model.keras.
"""

import json

import pytest

from tests.reliability.harness import (
    assert_checkpoints_whole,
    assert_same_tensors,
    checkpoint_step,
    checkpoint_tensors,
    latest_checkpoint,
    run_ssl3d,
)

pytestmark = pytest.mark.reliability

STEPS, EVERY = 6, 2
FINETUNE_TINY = [
    "--scratch", "--steps", str(STEPS), "--warmup-steps", "2", "--batch-size", "2",
    "--patch-size", "16", "--set", "scratch_encoder={depth=2, base_filters=4, dropout=0.0}",
    "--set", "data.phantoms.n=6", "--set", "data.phantoms.size=24",
    "--set", "evaluation.validate_every=0", "--set", f"checkpoint_every={EVERY}",
    "--set", "log_every=1", "--quiet",
]


def finetune(run, trace, **kill):
    return run_ssl3d(["finetune", *FINETUNE_TINY, "--out", run], trace, **kill)


@pytest.fixture(scope="module")
def finetune_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    outcome = finetune(root / "run", root / "trace")
    assert outcome.returncode == 0, outcome.describe()
    return root / "run", checkpoint_tensors(latest_checkpoint(root / "run"))


def kill_and_resume(tmp_path, reference, **kill):
    run = tmp_path / "run"
    killed = finetune(run, tmp_path / "killed.trace", **kill)
    assert killed.killed and (killed.hooks("kill") or killed.hooks("watch")), killed.describe()
    saved = assert_checkpoints_whole(run) if (run / "checkpoints").is_dir() else 0
    trained = 2 * len(killed.hooks("saved"))  # no step hook here: saves come every 2 steps
    assert trained - saved <= EVERY
    resumed = run_ssl3d(["finetune", "--out", run, "--resume", "--quiet"],
                        tmp_path / "resumed.trace")
    if resumed.returncode == 2 and "nothing to resume" in resumed.stderr:
        resumed = finetune(run, tmp_path / "resumed.trace")  # killed before its config
    assert resumed.returncode == 0, resumed.describe()
    assert "Test Dice" in resumed.stdout
    final = latest_checkpoint(run)
    assert checkpoint_step(final) == STEPS
    assert_same_tensors(reference[1], checkpoint_tensors(final))
    rows = (run / "training.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, STEPS + 1))
    expected = json.loads((reference[0] / "metrics.json").read_text())["summary"]
    assert json.loads((run / "metrics.json").read_text())["summary"] == expected
    return killed


# Moments by what the run is writing (globs under the run folder) or by hook (killshim.py).
MOMENTS = [
    ("phantoms-being-written", {"watch": "run/phantoms/imagesTr/phantom_002*"}),
    # Killed in its own prepare: the same command again prepares OUT/prepared anew
    # (data.prepare.prepare_owned), as ssl3d pretrain does.
    ("prepare-shard", {"kill_at": "tfrecord:3"}),
    ("config-written", {"watch": "run/config.json"}),
    ("checkpoint-data", {"watch": "run/checkpoints/ckpt-4_temp*"}),
    ("checkpoint-files-index-not", {"kill_at": "record:3"}),
    ("after-a-checkpoint", {"kill_at": "saved:2"}),
    ("predictions", {"watch": "run/predictions/*"}),
    ("model-keras", {"watch": "run/.model.keras.*"}),
]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("moment, kill", MOMENTS,
                         ids=[m[0] if isinstance(m, tuple) else m.id for m in MOMENTS])
def test_sigkill_at_a_chosen_moment(tmp_path, finetune_reference, moment, kill):
    kill = {key: (str(tmp_path / value) if key == "watch" else value)
            for key, value in kill.items()}
    kill_and_resume(tmp_path, finetune_reference, **kill)
