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


# Caps, clashes and full disks: untrusted archives never fill the disk or leave half a folder.


def _sparse(name, size):
    """A member that declares `size` bytes of holes in a few header bytes (GNU sparse 0.1)."""
    info = tarfile.TarInfo(name)
    info.size = 1
    info.pax_headers = {"GNU.sparse.map": "0,1", "GNU.sparse.size": str(size)}
    return info, b"x"


def test_a_tiny_sparse_archive_is_refused_before_writing(tmp_path):
    bad = tmp_path / "sparse.tar.gz"
    with tarfile.open(bad, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info, data = _sparse("saved_model.pb", 2**30)
        tar.addfile(info, io.BytesIO(data))
    assert bad.stat().st_size < 300  # a few hundred bytes that would expand to 1 GiB
    with pytest.raises(ExportError, match=r"refusing member 'saved_model.pb': sparse file of "
                                          r"1073741824 bytes"):
        archive.safe_extract(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_declared_bytes_and_members_are_capped_before_writing(tmp_path):
    bomb = tmp_path / "bomb.tar.gz"  # 64 MiB of zeros in about 64 KiB
    with tarfile.open(bomb, "w:gz") as tar:
        tar.addfile(_file("a.bin", b"a")[0], io.BytesIO(b"a"))
        info = tarfile.TarInfo("zeros.bin")
        info.size = 64 * 2**20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert bomb.stat().st_size < 2**20
    with pytest.raises(ExportError, match=r"declare more than the cap of 1048576 bytes \(at "
                                          r"member 'zeros.bin'\)"):
        archive.safe_extract(bomb, tmp_path / "out", max_bytes=2**20)
    assert not (tmp_path / "out").exists()
    assert (archive.safe_extract(bomb, tmp_path / "ok") / "zeros.bin").stat().st_size == 64 * 2**20

    many = _tar(tmp_path / "many.tar.gz", [_file(f"f{i}") for i in range(12)])
    with pytest.raises(ExportError, match="more than 11 members"):
        archive.safe_extract(many, tmp_path / "out", max_members=11)
    assert not (tmp_path / "out").exists()
    assert len(list(archive.safe_extract(many, tmp_path / "ok12", max_members=12).iterdir())) == 12
    assert archive.DEFAULT_EXTRACT_BYTES == 4 * 2**30 and archive.DEFAULT_MAX_MEMBERS == 10_000


@pytest.mark.parametrize("members, clash", [
    ([_file("saved_model.pb"), _file("saved_model.pb", b"evil")], "'saved_model.pb'"),
    ([_file("variables/a"), _file("Variables/A")], "'Variables/A'"),
    ([_file("./x"), _file("x")], "'x'"),
    ([_file("x"), _file("x/y")], "'x/y'"),
    ([_file("dir/y"), _file("DIR")], "'DIR'"),
    ([_file("caf\u00e9"), _file("cafe\u0301")], "'cafe\u0301'"),  # one name in NFC and NFD
])
def test_clashing_names_are_refused(tmp_path, members, clash):
    bad = _tar(tmp_path / "bad.tar.gz", members)
    with pytest.raises(ExportError, match=rf"refusing member {clash}: its path clashes"):
        archive.safe_extract(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_repeated_folders_and_a_dot_root_are_fine(tmp_path):
    folder = tarfile.TarInfo("./variables")
    folder.type = tarfile.DIRTYPE
    root = tarfile.TarInfo(".")
    root.type = tarfile.DIRTYPE
    good = _tar(tmp_path / "good.tar.gz", [(root, None), (folder, None), (folder, None),
                                           _file("./variables/a", b"1"), _file("b", b"2")])
    out = archive.safe_extract(good, tmp_path / "out")
    assert (out / "variables" / "a").read_bytes() == b"1" and (out / "b").read_bytes() == b"2"


def test_absurd_paths_are_refused(tmp_path):
    deep = _tar(tmp_path / "deep.tar.gz", [_file("d/" * archive.MAX_DEPTH + "f")])
    with pytest.raises(ExportError, match=rf"deeper than {archive.MAX_DEPTH} folders"):
        archive.safe_extract(deep, tmp_path / "out")
    long = _tar(tmp_path / "long.tar.gz", [_file("n" * 300)])
    with pytest.raises(ExportError, match="name too long"):
        archive.safe_extract(long, tmp_path / "out")
    ok = _tar(tmp_path / "ok.tar.gz", [_file("d/" * (archive.MAX_DEPTH - 1) + "f")])
    assert archive.safe_extract(ok, tmp_path / "ok").is_dir()


def test_a_full_disk_names_the_file_and_keeps_nothing(tmp_path, monkeypatch):
    import builtins
    import errno

    good = _tar(tmp_path / "good.tar.gz", [_file("saved_model.pb", b"pb" * 100),
                                           _file("variables/variables.data", b"v" * 100)])
    real_open = builtins.open

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode and str(path).endswith("variables.data"):
            def write(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = write
        return f

    monkeypatch.setattr(archive, "open", open_on_a_full_disk, raising=False)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"out/variables/variables.data: cannot write the "
                                          r"extracted file \(No space left on device\)"):
        archive.safe_extract(good, out)
    assert not out.exists()


def test_a_corrupt_archive_body_is_an_export_error(tmp_path):
    good = _tar(tmp_path / "good.tar.gz", [_file("a", os.urandom(200_000))])
    data = bytearray(good.read_bytes())
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ExportError, match="not a readable tar archive|corrupt data"):
        archive.safe_extract(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _serve(handler_class):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    httpd.daemon_threads = True  # a dripping handler must not hold up the shutdown
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


class _Drip(http.server.BaseHTTPRequestHandler):
    """Sends headers, then one body byte every 5 s: no single read ever times out."""

    def do_GET(self):
        import time

        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(5)
        except OSError:
            pass

    def log_message(self, *args):
        pass


class _DripHeaders(_Drip):
    """Sends its status line one byte every 5 s."""

    def do_GET(self):
        import time

        try:
            for byte in b"HTTP/1.0 200 OK\r\n\r\n":
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(5)
        except OSError:
            pass


@pytest.mark.parametrize("handler", [_Drip, _DripHeaders])
def test_a_dripping_server_fails_at_the_deadline(tmp_path, handler):
    import time

    httpd, url = _serve(handler)
    try:
        started = time.perf_counter()
        with pytest.raises(ExportError, match=r"did not finish within its deadline of 1.0 s"):
            archive.download(f"{url}/enc.tar.gz", "0" * 64, cache=tmp_path, timeout=30,
                             deadline=1.0)
        assert time.perf_counter() - started < 2.0  # per-read timeout (30 s) never trips
        assert list((tmp_path / "downloads" / ("0" * 64)).iterdir()) == []
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_body_past_the_cap_without_a_length_is_stopped(tmp_path):
    class Flood(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()  # no Content-Length: the body ends when the connection closes
            try:
                for _ in range(100):
                    self.wfile.write(b"y" * 1000)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    httpd, url = _serve(Flood)
    try:
        with pytest.raises(ExportError, match="exceeds the cap of 5000 bytes"):
            archive.download(f"{url}/flood", "0" * 64, cache=tmp_path, max_bytes=5000)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_corrupt_cache_entry_is_fetched_again(server, tmp_path):
    root, url = server
    data = os.urandom(10_000)
    (root / "enc.tar.gz").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    cached = archive.download(f"{url}/enc.tar.gz#sha256={digest}", cache=tmp_path / "c")
    cached.write_bytes(data[:5000] + b"flipped" + data[5007:])  # bit rot, or a tampered cache
    again = archive.download(f"{url}/enc.tar.gz#sha256={digest}", cache=tmp_path / "c")
    assert again == cached and again.read_bytes() == data
    (root / "enc.tar.gz").write_bytes(b"the server now sends something else")
    cached.write_bytes(b"corrupt")
    with pytest.raises(ExportError, match="sha256 mismatch"):
        archive.download(f"{url}/enc.tar.gz#sha256={digest}", cache=tmp_path / "c")
    assert cached.read_bytes() == b"corrupt"  # never replaced by an unverified body
