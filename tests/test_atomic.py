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
