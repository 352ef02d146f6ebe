"""`ssl3d export` killed while it replaces an earlier export, then loaded and run again.

The run of `pretrain_reference` is exported at ckpt-4, then re-exported at its latest
checkpoint (ckpt-12) and killed. Whatever the moment, `load_encoder(OUT)` loads one whole
export, the old or the new, never a mix and never nothing; a rerun writes the new one and
leaves no temporary folder beside it.
"""

import random
import shutil

import numpy as np
import pytest

from ssl3d_keras.export.folder import read_marker, verify_part
from tests.reliability.harness import invoke, run_ssl3d

pytestmark = pytest.mark.reliability

PARTS = ("preset", "savedmodel", "hub.tar.gz")


@pytest.fixture(scope="module")
def exports(tmp_path_factory, pretrain_reference):
    """Whole exports of ckpt-4 and ckpt-12 and their encoders' weights, made in this process."""
    from ssl3d_keras import load_encoder
    from ssl3d_keras.export.exporter import export_run

    root = tmp_path_factory.mktemp("exports")
    made = {}
    for step in (4, 12):
        export_run(pretrain_reference.run, root / f"ckpt-{step}", checkpoint=step)
        made[f"ckpt-{step}"] = (root / f"ckpt-{step}",
                                load_encoder(str(root / f"ckpt-{step}")).get_weights())
    return made


def export(run, out, trace, **kill):
    return run_ssl3d(["export", run, "--out", out], trace, **kill)


def judge(out, exports):
    """`out` loads as one whole export of ckpt-4 or ckpt-12; returns which."""
    from ssl3d_keras import load_encoder

    weights = load_encoder(str(out)).get_weights()  # puts back an export a kill set aside
    marker = read_marker(out)
    for part in PARTS:
        verify_part(out, part, marker)
    name = marker["source"]["checkpoint"]
    assert name in exports, marker
    expected = exports[name][1]
    assert len(weights) == len(expected)
    for a, b in zip(expected, weights, strict=True):
        np.testing.assert_array_equal(a, b)
    return name


def leftovers(out):
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def kill_reexport(tmp_path, pretrain_reference, exports, **kill):
    out = tmp_path / "export"
    shutil.copytree(exports["ckpt-4"][0], out)
    killed = export(pretrain_reference.run, out, tmp_path / "trace", **kill)
    return out, killed


def rerun(out, pretrain_reference, exports):
    again = invoke(["export", pretrain_reference.run, "--out", out])
    assert again.returncode == 0, again.describe()
    assert judge(out, exports) == "ckpt-12"
    assert leftovers(out) == []


@pytest.mark.subprocess
def test_sigkill_between_the_two_renames_of_the_swap(tmp_path, pretrain_reference, exports):
    # The old export is set aside and the new one is not yet in its place: OUT is missing.
    out, killed = kill_reexport(tmp_path, pretrain_reference, exports, kill_at="replaced:5")
    assert killed.killed and ".old-" in killed.hooks("replaced")[-1], killed.describe()
    assert not out.exists() and leftovers(out)
    assert judge(out, exports) == "ckpt-4"  # the old export, whole, put back by the loader
    rerun(out, pretrain_reference, exports)


# Hooks: see killshim.py. The re-export renames preset, savedmodel, hub.tar.gz and
# export.json into its build folder (replace 1-4), sets OUT aside (5), moves the build
# folder to OUT (6) and removes both temporary folders (rmtree 3, 4).
MOMENTS = [
    ("preset-written", {"kill_at": "replace:1"}, "ckpt-4"),
    ("savedmodel-being-written", {"kill_at": "savedmodel:1:0.3"}, "ckpt-4"),
    ("hub-archive-written", {"kill_at": "replace:3"}, "ckpt-4"),
    ("marker-written", {"kill_at": "replace:4"}, "ckpt-4"),
    ("before-old-set-aside", {"kill_at": "replace:5"}, "ckpt-4"),
    ("new-in-place", {"kill_at": "replaced:6"}, "ckpt-12"),
    ("old-being-removed", {"kill_at": "rmtree:3"}, "ckpt-12"),
]


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("moment, kill, loaded", MOMENTS, ids=[m[0] for m in MOMENTS])
def test_sigkill_at_a_chosen_moment(tmp_path, pretrain_reference, exports, moment, kill,
                                    loaded):
    out, killed = kill_reexport(tmp_path, pretrain_reference, exports, **kill)
    assert killed.killed and killed.hooks("kill"), killed.describe()
    assert judge(out, exports) == loaded
    rerun(out, pretrain_reference, exports)


# From the process start (most of it TensorFlow's import), or from the SavedModel's write on.
_RNG = random.Random(13)
RANDOM_KILLS = sorted(_RNG.uniform(1.0, 10.0) for _ in range(3))
RANDOM_DELAYS = sorted(round(_RNG.uniform(0, 0.5), 3) for _ in range(4))


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("seconds", RANDOM_KILLS, ids=[f"{s:.1f}s" for s in RANDOM_KILLS])
def test_sigkill_at_a_random_moment(tmp_path, pretrain_reference, exports, seconds):
    out, killed = kill_reexport(tmp_path, pretrain_reference, exports, kill_after=seconds)
    assert killed.returncode == 0 or killed.killed, killed.describe()
    assert judge(out, exports) in (("ckpt-12",) if killed.returncode == 0
                                   else ("ckpt-4", "ckpt-12"))
    rerun(out, pretrain_reference, exports)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("delay", RANDOM_DELAYS, ids=[f"{d}s" for d in RANDOM_DELAYS])
def test_sigkill_at_a_random_moment_of_writing(tmp_path, pretrain_reference, exports, delay):
    out, killed = kill_reexport(tmp_path, pretrain_reference, exports,
                                kill_at=f"savedmodel:1:{delay}")
    assert killed.returncode == 0 or killed.killed, killed.describe()
    assert judge(out, exports) in (("ckpt-12",) if killed.returncode == 0
                                   else ("ckpt-4", "ckpt-12"))
    rerun(out, pretrain_reference, exports)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_failing_write_keeps_the_earlier_export(tmp_path, pretrain_reference, exports):
    # The SavedModel's files may not grow past 2 kB: the export fails part-way inside
    # TensorFlow's writer, as on a full disk (EFBIG here, ENOSPC there).
    out, failed = kill_reexport(tmp_path, pretrain_reference, exports,
                                fsize="savedmodel:1:2000")
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and len(lines) == 1, failed.describe()
    assert "File too large" in lines[0] and "unchanged" in lines[0], lines
    assert judge(out, exports) == "ckpt-4"
    assert leftovers(out) == []
    rerun(out, pretrain_reference, exports)
