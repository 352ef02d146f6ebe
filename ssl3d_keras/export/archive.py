"""Archives and downloads: tar.gz writing, safe extraction, sha256, cached download.

A `.tar.gz` from the internet is untrusted input: extraction refuses absolute
paths, `..` components, links and device files, naming the member, instead of
relying on the caller's Python version's tarfile filters. Downloads are
verified against a sha256 the caller must give, capped in size, and written
to the cache only after they verify (a mismatch deletes the file).
"""

import gzip
import hashlib
import os
import shutil
import tarfile
import urllib.parse
import urllib.request
from pathlib import Path

from ssl3d_keras.atomic import atomic_path
from ssl3d_keras.checksum import sha256_file  # noqa: F401  (re-exported: archive.sha256_file)
from ssl3d_keras.errors import ExportError

DEFAULT_MAX_BYTES = 2 * 1024**3
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


def safe_extract(archive, out_dir):
    """Extract a `.tar.gz` into `out_dir` after checking every member.

    Raises:
        ExportError: the archive does not open, or a member has an absolute path,
            a `..` component, is a symlink, hardlink, device or fifo (the message
            names the member). Nothing is extracted then.

    Returns:
        `out_dir` as a `Path`.
    """
    out_dir = Path(out_dir)
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError) as e:
        raise ExportError(f"{archive}: not a readable tar archive ({e})") from None
    with tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, archive)
        out_dir.mkdir(parents=True, exist_ok=True)
        root = out_dir.resolve()
        for member in members:
            target = (out_dir / member.name).resolve()
            if root != target and root not in target.parents:
                raise ExportError(f"{archive}: refusing member '{member.name}': outside the folder")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return out_dir


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


def download(url, sha256=None, *, max_bytes=DEFAULT_MAX_BYTES, cache=None, timeout=60):
    """Download `url` into the cache, verified; return the cached file path.

    The file is stored as `<cache>/downloads/<sha256>/<file name>`; a verified
    cached copy is reused without network access. The body is streamed to a
    temp file, counted against `max_bytes` and hashed; it is moved into place
    only when its sha256 matches.

    Args:
        url: `http://` or `https://` URL, optionally with `#sha256=<hex>`.
        sha256: hex digest, if not in the URL.
        max_bytes: int, largest accepted download (default 2 GiB).
        cache: cache folder (default `cache_dir()`).
        timeout: seconds per network operation.

    Raises:
        ExportError: no sha256, another scheme, a network error, a body larger
            than `max_bytes`, or a sha256 mismatch (the partial file is deleted).
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
            _fetch_verified(url, tmp, digest, max_bytes, timeout)
    except OSError as e:
        raise ExportError(f"{url}: download failed ({e})") from None
    return final


def _fetch_verified(url, tmp, digest, max_bytes, timeout):
    """Stream `url` into `tmp`, refusing more than `max_bytes` or a sha256 other than `digest`."""
    hasher, size = hashlib.sha256(), 0
    with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
        declared = resp.headers.get("Content-Length")
        if declared and int(declared) > max_bytes:
            raise ExportError(f"{url}: download of {declared} bytes exceeds the cap of "
                              f"{max_bytes} bytes")
        for chunk in iter(lambda: resp.read(_CHUNK), b""):
            size += len(chunk)
            if size > max_bytes:
                raise ExportError(f"{url}: download exceeds the cap of {max_bytes} bytes")
            hasher.update(chunk)
            out.write(chunk)
    if hasher.hexdigest() != digest:
        raise ExportError(f"{url}: sha256 mismatch, file deleted. Expected {digest}, "
                          f"received {hasher.hexdigest()}")

