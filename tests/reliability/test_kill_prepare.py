"""`ssl3d prepare` (and `pretrain --data RAW`, which prepares first) killed, then run again.

After a kill the folder holds the uninterrupted result whole, or nothing a reader accepts
(no manifest: `Manifest.read` and `open_volumes` refuse it); a plain rerun says what is
there and how to replace it, and `--overwrite` then writes shards bit-identical to the
uninterrupted prepare's.
"""

import json
import random

import pytest

from ssl3d_keras.checksum import sha256_file
from ssl3d_keras.data.manifest import Manifest
from ssl3d_keras.data.volumes import open_volumes
from ssl3d_keras.errors import DataError
from tests.reliability.harness import (
    PREPARE_ARGS,
    assert_checkpoints_whole,
    invoke,
    run_ssl3d,
)

pytestmark = pytest.mark.reliability


def prepare(raw, out, trace, *extra, **kill):
    return run_ssl3d(["prepare", raw, "--out", out, *PREPARE_ARGS, *extra], trace, **kill)


def shard_records(folder, shard):
    """The cases of one shard as `(case_id, image bytes, label bytes)`."""
    import tensorflow as tf

    from ssl3d_keras.data.shards import parse_example

    return [(r["case_id"].numpy(), r["image"].numpy().tobytes(), r["label"].numpy().tobytes())
            for r in map(parse_example, tf.data.TFRecordDataset(str(folder / shard)))]


def assert_same_prepared(out, reference):
    """`out` is a whole prepared dataset equal to the reference: same shard bytes (sha256),
    same cases decoded, and nothing else in the folder (no temporary file a kill left)."""
    manifest, expected = Manifest.read(out), Manifest.read(reference)
    assert manifest.shards == expected.shards
    assert [c["id"] for c in manifest.cases] == [c["id"] for c in expected.cases]
    for shard in manifest.shards:
        assert sha256_file(out / shard["path"]) == shard["sha256"]
        assert shard_records(out, shard["path"]) == shard_records(reference, shard["path"])
    assert names(out) == names(reference)


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def judge_killed(out, reference):
    """Whole and equal to the reference, or refused by every reader. Returns True if whole."""
    if Manifest.exists(out):
        assert_same_prepared(out, reference)
        return True
    with pytest.raises(DataError):
        Manifest.read(out)
    with pytest.raises(DataError):
        open_volumes(str(out))
    return False


def rerun(raw, out, reference, whole):
    """A plain rerun is refused in one line naming --overwrite; with it, the whole dataset."""
    again = invoke(["prepare", raw, "--out", out, *PREPARE_ARGS])
    assert again.returncode == 2, again.describe()
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "--overwrite" in lines[0], again.describe()
    if whole:
        assert "already holds a prepared dataset" in lines[0]
    replaced = invoke(["prepare", raw, "--out", out, *PREPARE_ARGS, "--overwrite"])
    assert replaced.returncode == 0, replaced.describe()
    assert_same_prepared(out, reference)


@pytest.mark.subprocess
def test_sigkill_while_a_shard_is_written(tmp_path, raw_phantoms, prepare_reference):
    out = tmp_path / "prepared"
    killed = prepare(raw_phantoms, out, tmp_path / "trace", kill_at="tfrecord:3")
    assert killed.killed, killed.describe()
    # shard 0 finished, shard 1 half-written under its temporary name, no manifest
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000.tfrecord",
                                                      "shard-00001.tfrecord.tmp"]
    assert not judge_killed(out, prepare_reference)
    rerun(raw_phantoms, out, prepare_reference, False)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_rerun_writes_the_same_shard_bytes(tmp_path, raw_phantoms, prepare_reference):
    out = tmp_path / "prepared"
    assert prepare(raw_phantoms, out, tmp_path / "trace").returncode == 0
    assert Manifest.read(out).shards == Manifest.read(prepare_reference).shards


# Hooks: see killshim.py. Six cases, two per shard: 6 `tfrecord` calls, 3 shard renames and
# the manifest's (the 4th `replace`).
MOMENTS = [
    ("first-case", {"kill_at": "tfrecord:1"}),
    ("shard-full-before-rename", {"kill_at": "replace:2"}),
    ("shard-renamed", {"kill_at": "replaced:2"}),
    ("last-case", {"kill_at": "tfrecord:6"}),
    ("all-shards-no-manifest", {"kill_at": "replaced:3"}),
    ("manifest-written-not-renamed", {"kill_at": "replace:4"}),
    ("manifest-renamed", {"kill_at": "replaced:4"}),
]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("moment, kill", MOMENTS, ids=[m[0] for m in MOMENTS])
def test_sigkill_at_a_chosen_moment(tmp_path, raw_phantoms, prepare_reference, moment, kill):
    out = tmp_path / "prepared"
    killed = prepare(raw_phantoms, out, tmp_path / "trace", **kill)
    assert killed.killed and killed.hooks("kill"), killed.describe()
    whole = judge_killed(out, prepare_reference)
    assert whole == (moment == "manifest-renamed")
    rerun(raw_phantoms, out, prepare_reference, whole)


@pytest.mark.slow
@pytest.mark.subprocess
def test_overwrite_removes_what_a_killed_prepare_left(tmp_path, raw_phantoms):
    out = tmp_path / "prepared"
    killed = prepare(raw_phantoms, out, tmp_path / "trace", kill_at="replace:4")
    assert killed.killed, killed.describe()
    assert invoke(["prepare", raw_phantoms, "--out", out, *PREPARE_ARGS,
                   "--overwrite"]).returncode == 0
    assert not [name for name in names(out) if name.startswith(".")], names(out)


# From the process start (most of it TensorFlow's import), or from a random case on.
_RNG = random.Random(12)
RANDOM_KILLS = sorted(_RNG.uniform(0.5, 3.5) for _ in range(3))
RANDOM_CASES = sorted((_RNG.randint(1, 6), round(_RNG.uniform(0, 0.01), 4)) for _ in range(4))


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("seconds", RANDOM_KILLS, ids=[f"{s:.1f}s" for s in RANDOM_KILLS])
def test_sigkill_at_a_random_moment(tmp_path, raw_phantoms, prepare_reference, seconds):
    killed = prepare(raw_phantoms, tmp_path / "prepared", tmp_path / "trace",
                     kill_after=seconds)
    judge_random(raw_phantoms, tmp_path / "prepared", prepare_reference, killed)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("case, delay", RANDOM_CASES, ids=[f"{k}+{d}s" for k, d in RANDOM_CASES])
def test_sigkill_at_a_random_moment_of_writing(tmp_path, raw_phantoms, prepare_reference, case,
                                               delay):
    killed = prepare(raw_phantoms, tmp_path / "prepared", tmp_path / "trace",
                     kill_at=f"tfrecord:{case}:{delay}")
    judge_random(raw_phantoms, tmp_path / "prepared", prepare_reference, killed)


def judge_random(raw_phantoms, out, prepare_reference, killed):
    if killed.returncode == 0:
        assert_same_prepared(out, prepare_reference)
        return
    assert killed.killed, killed.describe()
    if not out.exists() or not any(out.iterdir()):
        # killed before writing anything: a plain rerun prepares
        again = invoke(["prepare", raw_phantoms, "--out", out, *PREPARE_ARGS])
        assert again.returncode == 0, again.describe()
        assert_same_prepared(out, prepare_reference)
        return
    rerun(raw_phantoms, out, prepare_reference, judge_killed(out, prepare_reference))


@pytest.mark.slow
@pytest.mark.subprocess
def test_pretrain_killed_in_its_own_prepare_then_run_again(tmp_path, raw_phantoms):
    run = tmp_path / "run"
    args = ["pretrain", "rotation", "--out", run, "--quiet", "--data", raw_phantoms,
            "--steps", "4", "--batch-size", "2", "--input-size", "16",
            "--set", "encoder.depth=1", "--set", "encoder.base_filters=2",
            "--set", "task_config.head_units=[8]", "--set", "checkpoint_every=2"]
    killed = run_ssl3d(args, tmp_path / "trace", kill_at="tfrecord:3")
    assert killed.killed, killed.describe()
    assert not Manifest.exists(run / "prepared")
    # `--resume` finds no run (it had not started) and says so in one line ...
    resumed = run_ssl3d(["pretrain", "rotation", "--out", run, "--resume"], tmp_path / "trace")
    assert resumed.returncode == 2, resumed.describe()
    assert "nothing to resume" in resumed.stderr and len(resumed.stderr.strip().splitlines()) == 1
    # ... and the same command again prepares anew over the leftovers and trains.
    again = run_ssl3d(args, tmp_path / "trace")
    assert again.returncode == 0, again.describe()
    assert assert_checkpoints_whole(run) == 4
    manifest = Manifest.read(run / "prepared")
    assert len(manifest.cases) == 6
    for shard in manifest.shards:
        assert sha256_file(run / "prepared" / shard["path"]) == shard["sha256"]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
