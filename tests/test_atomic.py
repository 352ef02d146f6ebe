import json

import pytest

from ssl3d_keras.atomic import atomic_path, write_json_atomic, write_text_atomic


def test_success_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "volume.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz")
        assert not target.exists()  # nothing is visible under the final name while writing
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["volume.nii.gz"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = write_text_atomic(tmp_path / "config.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_json_round_trip_and_refused_nan(tmp_path):
    path = write_json_atomic(tmp_path / "m.json", {"b": 1, "a": [1.5]}, sort_keys=True)
    assert json.loads(path.read_text()) == {"a": [1.5], "b": 1}
    assert path.read_text().endswith("\n")
    with pytest.raises(ValueError):
        write_json_atomic(path, {"x": float("nan")}, allow_nan=False)
    assert json.loads(path.read_text()) == {"a": [1.5], "b": 1}


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "manifest.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the group, as open() would make it


# Folder swaps: whole or not at all, recoverable after a kill between the two renames.

from ssl3d_keras.atomic import (  # noqa: E402
    FolderBusyError,
    atomic_dir,
    folder_lock,
    has_leftovers,
    read_holder,
    recover_dir,
    replace_dir,
)


def _folder(path, text):
    path.mkdir(parents=True)
    (path / "file.txt").write_text(text)
    return path


def test_atomic_dir_replaces_a_folder_and_leaves_nothing_beside_it(tmp_path):
    _folder(tmp_path / "preset", "old")
    with atomic_dir(tmp_path / "preset") as tmp:
        assert tmp.name == "preset" and tmp.parent.name.startswith(".preset.new-")
        (tmp / "file.txt").write_text("new")
        assert (tmp_path / "preset" / "file.txt").read_text() == "old"  # old visible while writing
    assert (tmp_path / "preset" / "file.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["preset"]  # no .old-*, .new-*, lock


def test_a_failed_block_keeps_the_old_folder(tmp_path):
    _folder(tmp_path / "preset", "old")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "preset") as tmp:
        (tmp / "file.txt").write_text("half")
        raise RuntimeError("failed mid-write")
    assert (tmp_path / "preset" / "file.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["preset"]


def _killed_between_renames(tmp_path):
    """The state a SIGKILL between the two renames of a swap leaves: OUT set aside, a new build."""
    out = tmp_path / "out"
    _folder(tmp_path / ".out.old-0123abcd" / "out", "old")
    _folder(tmp_path / ".out.new-89abcdef" / "out", "new, maybe partial")
    return out


def test_recover_puts_the_old_folder_back_after_a_kill_between_renames(tmp_path):
    out = _killed_between_renames(tmp_path)
    _folder(tmp_path / "out-2", "a neighbour")  # similar names are not leftovers of `out`
    _folder(tmp_path / ".out-2.new-00000000", "a neighbour's build")
    assert has_leftovers(out) and not out.exists()
    assert recover_dir(out) is True
    assert (out / "file.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out-2.new-00000000", "out", "out-2"]
    assert not has_leftovers(out) and recover_dir(out) is False


def test_recover_removes_leftovers_when_the_folder_is_there(tmp_path):
    _folder(tmp_path / "out", "new")  # killed after the second rename, before the clean-up
    _folder(tmp_path / ".out.old-0123abcd" / "out", "old")
    assert recover_dir(tmp_path / "out") is False
    assert (tmp_path / "out" / "file.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_next_writer_recovers_first(tmp_path):
    out = _killed_between_renames(tmp_path)
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "file.txt").write_text("third")
        raise RuntimeError
    assert (out / "file.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replace_dir_undoes_the_first_rename_if_the_second_fails(tmp_path, monkeypatch):
    import os

    _folder(tmp_path / "dst", "old")
    _folder(tmp_path / "src", "new")
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        replace_dir(tmp_path / "src", tmp_path / "dst")
    monkeypatch.undo()
    assert (tmp_path / "dst" / "file.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]


def test_folder_lock_refuses_a_second_writer_naming_it(tmp_path):
    import os

    with folder_lock(tmp_path / "out"):
        assert read_holder(tmp_path / ".out.lock")["pid"] == os.getpid()
        # flock locks belong to the open file, so a second open in this process is refused too.
        with pytest.raises(FolderBusyError, match=rf"pid {os.getpid()}"), \
                folder_lock(tmp_path / "out", blocking=False):
            pass
        with pytest.raises(FolderBusyError), atomic_dir(tmp_path / "out", blocking=False):
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_lock_file_left_by_a_killed_writer_does_not_block(tmp_path):
    (tmp_path / ".out.lock").write_text("999999")
    with atomic_dir(tmp_path / "out", blocking=False) as tmp:
        (tmp / "file.txt").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# The one advisory lock (folder swaps and runs): holder record, refusal, waiting, takeover.

import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from ssl3d_keras.atomic import LockBusyError, hold_lock  # noqa: E402

HOLD = ("import sys\nfrom ssl3d_keras.atomic import hold_lock\n"
        "with hold_lock(sys.argv[1]):\n    print('locked', flush=True)\n    sys.stdin.read()\n")


@pytest.fixture
def held(tmp_path):
    """Another process holding `tmp_path / "x.lock"` until its stdin is closed."""
    lock = tmp_path / "x.lock"
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    yield lock, process
    if not process.stdin.closed:
        process.stdin.close()
    process.wait(timeout=30)


def test_a_held_lock_refuses_another_process_naming_its_holder(held):
    lock, process = held
    with pytest.raises(LockBusyError) as info, hold_lock(lock, blocking=False):
        pass
    assert info.value.holder["pid"] == process.pid
    assert info.value.holder["host"] == socket.gethostname()
    assert f"is held by pid {process.pid} on host {socket.gethostname()} since " in str(info.value)
    assert read_holder(lock) == info.value.holder  # the holder's record is left alone


def test_a_blocking_lock_waits_for_the_holder_to_release_it(held, caplog):
    lock, process = held
    closer = threading.Timer(0.3, process.stdin.close)
    start = time.monotonic()
    closer.start()
    with caplog.at_level("WARNING", logger="ssl3d_keras"), hold_lock(lock) as holder:
        waited = time.monotonic() - start
        assert read_holder(lock) == holder and holder["pid"] == os.getpid()
    closer.join()
    assert waited >= 0.3  # the holder releases only once its stdin is closed
    assert "Taking over" not in caplog.text  # a released lock is not a killed holder's
    assert not lock.exists()


def test_a_folder_lock_left_by_a_killed_writer_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)  # that process has exited
    (tmp_path / ".out.lock").write_text(json.dumps(
        {"pid": pid, "host": socket.gethostname(), "started": "2026-11-29T10:00:00+00:00"}))
    with caplog.at_level("WARNING", logger="ssl3d_keras"), atomic_dir(tmp_path / "out") as tmp:
        assert read_holder(tmp_path / ".out.lock")["pid"] == os.getpid()
        (tmp / "file.txt").write_text("x")
    assert (f"Taking over the lock of pid {pid} on host {socket.gethostname()} since "
            "2026-11-29T10:00:00+00:00") in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_holder_without_a_readable_record_is_still_refused(tmp_path):
    import fcntl

    lock = tmp_path / ".out.lock"
    lock.write_text("4242")  # an older version's bare pid
    with open(lock) as other:
        fcntl.flock(other, fcntl.LOCK_EX)  # a second open file: conflicts even in this process
        with pytest.raises(FolderBusyError, match="by another process: an unknown holder") as info, \
                folder_lock(tmp_path / "out", blocking=False):
            pass
    assert info.value.holder is None
    assert lock.read_text() == "4242"
