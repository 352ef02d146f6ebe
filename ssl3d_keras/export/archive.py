"""Archives and downloads: tar.gz writing, safe extraction, sha256, cached download.

A `.tar.gz` from the internet is untrusted input: extraction refuses absolute
paths, `..` components, links, device and sparse files, clashing and absurdly
deep paths, and archives past a cap on members or bytes, naming the member,
instead of relying on the caller's Python version's tarfile filters. Downloads are
verified against a sha256 the caller must give, capped in size and in time
(a deadline for the whole transfer, not only per read), and written to the
cache only after they verify (a mismatch deletes the file).
"""

import gzip
import hashlib
import os
import shutil
import tarfile
import threading
import unicodedata
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from ssl3d_keras.atomic import atomic_path
from ssl3d_keras.checksum import sha256_file  # noqa: F401  (re-exported: archive.sha256_file)
from ssl3d_keras.errors import ExportError

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_DEADLINE = 3600
# Our exports are megabytes and tens of files; these caps leave room for large encoders.
DEFAULT_EXTRACT_BYTES = 4 * 1024**3
DEFAULT_MAX_MEMBERS = 10_000
MAX_DEPTH = 32
_CHUNK = 1 << 20


def cache_dir():
    """The download and build cache: `$SSL3D_CACHE`, else `~/.cache/ssl3d`."""
    return Path(os.environ.get("SSL3D_CACHE") or Path.home() / ".cache" / "ssl3d")


def write_tar_gz(src_dir, out_file):
    """Pack the files of `src_dir` at the archive root (Kaggle Models / TF Hub layout).

    Reproducible: members sorted, mtime 0, uid/gid 0, no owner names, gzip
    header without a file name or time, so the same folder gives the same bytes.
    Written to a temp file and moved into place.

    Returns:
        `out_file` as a `Path`.
    """
    src_dir, out_file = Path(src_dir), Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    members = sorted(p for p in src_dir.rglob("*"))
    with atomic_path(out_file) as tmp:
        with open(tmp, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in members:
                info = tar.gettarinfo(str(path), arcname=path.relative_to(src_dir).as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                info.mode = 0o755 if info.isdir() else 0o644
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                elif info.isdir():
                    tar.addfile(info)
                else:
                    raise ExportError(f"{path}: only files and folders can be archived")
    return out_file


def _check_member(member, archive):
    name = member.name
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (parts and ":" in parts[0]):
        raise ExportError(f"{archive}: refusing member '{name}': absolute path")
    if ".." in parts or ".." in name.replace("\\", "/").split("/"):
        raise ExportError(f"{archive}: refusing member '{name}': path with '..'")
    if member.issym() or member.islnk():
        raise ExportError(f"{archive}: refusing member '{name}': link to '{member.linkname}'")
    if not (member.isfile() or member.isdir()):
        raise ExportError(f"{archive}: refusing member '{name}': not a regular file or folder "
                          f"(type {member.type!r})")
    if member.issparse():
        # A few header bytes can declare gigabytes of holes; our exports never hold one.
        raise ExportError(f"{archive}: refusing member '{name}': sparse file of "
                          f"{member.size} bytes")


def _parts(member, archive):
    """The member's path components (without `.` and empty ones), checked for depth and length."""
    parts = [p for p in member.name.replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) > MAX_DEPTH:
        raise ExportError(f"{archive}: refusing member '{member.name[:200]}...': path deeper "
                          f"than {MAX_DEPTH} folders ({len(parts)})")
    if any(len(p.encode()) > 255 for p in parts) or len(member.name.encode()) > 4096:
        raise ExportError(f"{archive}: refusing member '{member.name[:200]}...': name too long")
    if not parts and not member.isdir():
        raise ExportError(f"{archive}: refusing member '{member.name}': a file without a name")
    return parts


class _Clashes:
    """Paths seen so far, compared as a case-insensitive file system would (NFC, casefold)."""

    def __init__(self, archive):
        self.archive, self.files, self.dirs = archive, {}, {}

    def add(self, member, parts):
        keys = ["/".join(parts[:i + 1]) for i in range(len(parts))]
        keys = [unicodedata.normalize("NFC", k).casefold() for k in keys]
        folders = keys if member.isdir() else keys[:-1]
        for key in folders:
            if key in self.files:
                self._refuse(member, self.files[key])
            self.dirs.setdefault(key, member.name)
        if not member.isdir():
            if keys[-1] in self.files or keys[-1] in self.dirs:
                self._refuse(member, self.files.get(keys[-1]) or self.dirs[keys[-1]])
            self.files[keys[-1]] = member.name

    def _refuse(self, member, other):
        raise ExportError(f"{self.archive}: refusing member '{member.name}': its path clashes "
                          f"with member '{other}' (the same path, or one differing only in case)")


def _checked_members(tar, archive, max_bytes, max_members):
    """Read and check every member header, stopping at the first one past a cap."""
    members, declared, clashes = [], 0, _Clashes(archive)
    while True:
        try:
            member = tar.next()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise ExportError(f"{archive}: not a readable tar archive ({e})") from None
        if member is None:
            return members
        if len(members) >= max_members:
            raise ExportError(f"{archive}: more than {max_members} members; refusing the "
                              "archive (raise max_members if it is trusted)")
        _check_member(member, archive)
        parts = _parts(member, archive)
        declared += member.size if member.isfile() else 0
        if declared > max_bytes:
            raise ExportError(f"{archive}: its files declare more than the cap of {max_bytes} "
                              f"bytes (at member '{member.name}'); refusing the archive")
        if parts:
            clashes.add(member, parts)
            members.append((member, parts))


def safe_extract(archive, out_dir, *, max_bytes=DEFAULT_EXTRACT_BYTES,
                 max_members=DEFAULT_MAX_MEMBERS):
    """Extract a `.tar.gz` into `out_dir` after checking every member.

    Every header is checked before anything is written; the bytes written are
    counted again while writing, so the cap holds whatever the headers say.

    Args:
        archive: the `.tar.gz` (or `.tar`) file.
        out_dir: folder to extract into (created).
        max_bytes: int, cap on the total size of the extracted files (default 4 GiB).
        max_members: int, cap on the number of members (default 10,000).

    Raises:
        ExportError: the archive does not open; a member has an absolute path, a
            `..` component, a path deeper than `MAX_DEPTH` folders or too long,
            is a symlink, hardlink, device, fifo or sparse file, or clashes with
            another member (also when only the case differs), or the archive
            passes a cap (the message names the member). Nothing is written
            then. Writing fails (a full disk): the message names the file, and
            `out_dir` is removed if this call created it.

    Returns:
        `out_dir` as a `Path`.
    """
    out_dir = Path(out_dir)
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise ExportError(f"{archive}: not a readable tar archive ({e})") from None
    with tar:
        members = _checked_members(tar, archive, max_bytes, max_members)
        created = not out_dir.exists()
        try:
            _write_members(tar, members, archive, out_dir, max_bytes)
        except BaseException:
            if created:
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
    return out_dir


def _write_members(tar, members, archive, out_dir, max_bytes):
    out_dir.mkdir(parents=True, exist_ok=True)
    root, total = out_dir.resolve(), 0
    for member, parts in members:
        target = root.joinpath(*parts).resolve()
        if root != target and root not in target.parents:
            raise ExportError(f"{archive}: refusing member '{member.name}': outside the folder")
        try:
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise ExportError(f"{archive}: extracting '{member.name}' passes the cap "
                                          f"of {max_bytes} bytes; refusing the archive")
                    dst.write(chunk)
        except OSError as e:
            raise ExportError(f"{target}: cannot write the extracted file ({e.strerror or e}); "
                              "nothing of the archive is kept") from None
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise ExportError(f"{archive}: corrupt data in member '{member.name}' ({e})") from None


def split_sha256(url, sha256=None):
    """`("https://x/a.tar.gz", "<hex>")` from `"https://x/a.tar.gz#sha256=<hex>"` or the argument.

    Raises:
        ExportError: no sha256 given, or it is not 64 hex digits.
    """
    parsed = urllib.parse.urlsplit(url)
    fragment = urllib.parse.parse_qs(parsed.fragment)
    from_url = fragment.get("sha256", [None])[0]
    if from_url and sha256 and from_url.lower() != sha256.lower():
        raise ExportError(f"{url}: two different sha256 given. Received: {sha256}")
    digest = (sha256 or from_url or "").lower()
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise ExportError(f"{url}: a download needs its sha256 (64 hex digits), as "
                          f"'URL#sha256=<hex>' or sha256=... Received: {digest or None!r}")
    return urllib.parse.urlunsplit(parsed._replace(fragment="")), digest


def download(url, sha256=None, *, max_bytes=DEFAULT_MAX_BYTES, cache=None, timeout=60,
             deadline=DEFAULT_DEADLINE):
    """Download `url` into the cache, verified; return the cached file path.

    The file is stored as `<cache>/downloads/<sha256>/<file name>`; a cached
    copy is reused without network access if its sha256 still matches, and
    fetched again if it does not (a corrupt cache entry). The body is streamed
    to a temp file, counted against `max_bytes` and hashed; it is moved into
    place only when its sha256 matches.

    Args:
        url: `http://` or `https://` URL, optionally with `#sha256=<hex>`.
        sha256: hex digest, if not in the URL.
        max_bytes: int, largest accepted download (default 2 GiB).
        cache: cache folder (default `cache_dir()`).
        timeout: seconds per network operation.
        deadline: seconds for the whole download (default 1 hour): a server that
            sends a byte now and then never trips `timeout`, but trips this.

    Raises:
        ExportError: no sha256, another scheme, a network error, a body larger
            than `max_bytes`, the deadline passed, or a sha256 mismatch (the
            partial file is deleted).
    """
    url, digest = split_sha256(url, sha256)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ExportError(f"{url}: only http(s) downloads are supported. Received scheme {scheme!r}")
    name = os.path.basename(urllib.parse.urlsplit(url).path) or "download"
    folder = Path(cache or cache_dir()) / "downloads" / digest
    final = folder / name
    if final.is_file() and sha256_file(final) == digest:
        return final
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(final) as tmp:
            _fetch_in_time(url, tmp, digest, max_bytes, timeout, deadline)
    except OSError as e:
        raise ExportError(f"{url}: download failed ({e})") from None
    return final


def _fetch_in_time(url, tmp, digest, max_bytes, timeout, deadline):
    """`_fetch_verified` in a worker thread, abandoned (and told to stop) at the deadline."""
    stop, failure = threading.Event(), []

    def work():
        try:
            _fetch_verified(url, tmp, digest, max_bytes, timeout, stop)
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)

    worker = threading.Thread(target=work, name="ssl3d-download", daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        stop.set()
        raise ExportError(f"{url}: download did not finish within its deadline of {deadline} s "
                          "(the server is too slow or stalls); nothing was kept")
    if failure:
        raise failure[0]


def _fetch_verified(url, tmp, digest, max_bytes, timeout, stop):
    """Stream `url` into `tmp`, refusing more than `max_bytes` or a sha256 other than `digest`."""
    hasher, size = hashlib.sha256(), 0
    with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise ExportError(f"{url}: download of {declared} bytes exceeds the cap of "
                              f"{max_bytes} bytes")
        # read1 returns what one socket read gives, so the stop flag is seen between bytes.
        while not stop.is_set() and (chunk := resp.read1(_CHUNK)):
            size += len(chunk)
            if size > max_bytes:
                raise ExportError(f"{url}: download exceeds the cap of {max_bytes} bytes")
            hasher.update(chunk)
            out.write(chunk)
    if stop.is_set():
        return
    if hasher.hexdigest() != digest:
        raise ExportError(f"{url}: sha256 mismatch, file deleted. Expected {digest}, "
                          f"received {hasher.hexdigest()}")
