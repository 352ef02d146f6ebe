"""One writer per run directory: the lock, its holder record, stale locks, two processes."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.training.lock import RunLock, read_holder

HOLD = textwrap.dedent("""
    import sys
    from ssl3d_keras.training.lock import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # hold until the test closes our stdin
""")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of `tmp_path / "run"`."""
    run = tmp_path / "run"
    run.mkdir()
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    yield run, process
    process.stdin.close()
    process.wait(timeout=30)


def test_a_second_writer_is_refused_with_the_holders_name(holder):
    run, process = holder
    with pytest.raises(ConfigError) as info, RunLock(run):
        pass
    message = str(info.value)
    assert info.value.key == "out"
    assert f"pid {process.pid} on host {socket.gethostname()} since " in message
    assert read_holder(run / "run.lock")["pid"] == process.pid  # the record is left alone
    # once the holder ends, the folder is free
    process.stdin.close()
    process.wait(timeout=30)
    assert not (run / "run.lock").exists()  # released and removed on exit
    with RunLock(run) as lock:
        assert read_holder(run / "run.lock") == lock.holder
        assert lock.holder["pid"] == os.getpid()


def test_pretrain_into_a_held_folder_is_refused_before_writing(holder):
    from ssl3d_keras.training import pretrain

    run, process = holder
    with pytest.raises(ConfigError, match=f"in use by another run: pid {process.pid}"):
        pretrain({"task": "rotation", "steps": 1}, run, verbose=False)
    assert sorted(p.name for p in run.iterdir()) == ["run.lock"]


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)  # that process has exited
    (tmp_path / "run.lock").write_text(json.dumps(
        {"pid": pid, "host": socket.gethostname(), "started": "2026-11-29T10:00:00+00:00"}))
    with caplog.at_level("WARNING", logger="ssl3d_keras"), RunLock(tmp_path) as lock:
        assert lock.holder["pid"] == os.getpid()
    assert f"Taking over the lock of pid {pid} on host {socket.gethostname()}" in caplog.text


def test_the_same_process_cannot_hold_a_folder_twice(tmp_path):
    with RunLock(tmp_path), pytest.raises(ConfigError, match=f"pid {os.getpid()}"):
        with RunLock(tmp_path):
            pass
