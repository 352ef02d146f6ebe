"""Archives: reproducible packing, safe extraction, verified size-capped downloads."""

import hashlib
import http.server
import io
import os
import tarfile
import threading

import pytest

from ssl3d_keras.errors import ExportError
from ssl3d_keras.export import archive


def _tar(path, members):
    """Write a tar.gz with raw `TarInfo` members: list of (info, bytes or None)."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def test_write_tar_gz_is_reproducible_with_files_at_root(tmp_path):
    src = tmp_path / "src"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"pb")
    (src / "variables" / "variables.index").write_bytes(b"idx")
    a = archive.write_tar_gz(src, tmp_path / "a.tar.gz")
    os.utime(src / "saved_model.pb", (1, 1))  # a changed mtime must not change the bytes
    b = archive.write_tar_gz(src, tmp_path / "b.tar.gz")
    assert archive.sha256_file(a) == archive.sha256_file(b)
    with tarfile.open(a) as tar:
        assert tar.getnames() == ["saved_model.pb", "variables", "variables/variables.index"]
    out = archive.safe_extract(a, tmp_path / "out")
    assert (out / "variables" / "variables.index").read_bytes() == b"idx"


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 7)  # more than one read chunk
    (tmp_path / "f").write_bytes(data)
    assert archive.sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("member, reason", [
    (_file("/etc/evil"), "absolute path"),
    (_file("../evil"), "'..'"),
    (_file("ok/../../evil"), "'..'"),
    (_special("link", tarfile.SYMTYPE, "/etc/passwd"), "link to '/etc/passwd'"),
    (_special("hard", tarfile.LNKTYPE, "saved_model.pb"), "link to 'saved_model.pb'"),
    (_special("dev", tarfile.CHRTYPE), "not a regular file"),
    (_special("fifo", tarfile.FIFOTYPE), "not a regular file"),
])
def test_unsafe_members_are_refused(tmp_path, member, reason):
    bad = _tar(tmp_path / "bad.tar.gz", [_file("saved_model.pb"), member])
    with pytest.raises(ExportError, match="refusing member") as err:
        archive.safe_extract(bad, tmp_path / "out")
    assert member[0].name in str(err.value) and reason in str(err.value)
    assert not (tmp_path / "out").exists()  # checked before anything is written
    assert not (tmp_path.parent / "evil").exists()


def test_not_an_archive(tmp_path):
    (tmp_path / "x.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(ExportError, match="not a readable tar archive"):
        archive.safe_extract(tmp_path / "x.tar.gz", tmp_path / "out")


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over `tmp_path / 'www'`, in a thread."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_caches_and_deletes_mismatch(server, tmp_path):
    root, url = server
    data = os.urandom(50_000)
    (root / "enc.tar.gz").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    got = archive.download(f"{url}/enc.tar.gz#sha256={digest}", cache=cache)
    assert got.read_bytes() == data and got.parent.name == digest
    (root / "enc.tar.gz").unlink()  # the cached, verified copy is reused offline
    assert archive.download(f"{url}/enc.tar.gz", sha256=digest, cache=cache) == got

    (root / "other.tar.gz").write_bytes(b"tampered")
    wrong = "0" * 64
    with pytest.raises(ExportError, match="sha256 mismatch, file deleted"):
        archive.download(f"{url}/other.tar.gz#sha256={wrong}", cache=cache)
    assert list((cache / "downloads" / wrong).iterdir()) == []


def test_download_size_cap_and_missing_sha(server, tmp_path):
    root, url = server
    (root / "big.bin").write_bytes(b"y" * 10_000)
    digest = hashlib.sha256(b"y" * 10_000).hexdigest()
    with pytest.raises(ExportError, match="exceeds the cap of 1000 bytes"):
        archive.download(f"{url}/big.bin", digest, max_bytes=1000, cache=tmp_path / "c")
    assert list((tmp_path / "c" / "downloads" / digest).iterdir()) == []
    with pytest.raises(ExportError, match="needs its sha256"):
        archive.download(f"{url}/big.bin", cache=tmp_path / "c")
    with pytest.raises(ExportError, match="needs its sha256"):
        archive.download(f"{url}/big.bin#sha256=abc", cache=tmp_path / "c")
    with pytest.raises(ExportError, match="download failed"):
        archive.download(f"{url}/missing.bin", digest, cache=tmp_path / "c")
    with pytest.raises(ExportError, match="only http"):
        archive.download(f"ftp://127.0.0.1/x#sha256={digest}", cache=tmp_path / "c")


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SSL3D_CACHE", str(tmp_path / "here"))
    assert archive.cache_dir() == tmp_path / "here"
    monkeypatch.delenv("SSL3D_CACHE")
    assert archive.cache_dir().parts[-2:] == (".cache", "ssl3d")
