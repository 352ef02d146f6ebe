"""The sha256 of a file: the one helper behind shard, preset, archive and download checks.

Example:

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "x"
>>> _ = path.write_bytes(b"abc")
>>> sha256_file(path)[:16]
'ba7816bf8f01cfea'
"""

import hashlib

__all__ = ["sha256_file"]

_CHUNK = 1 << 20


def sha256_file(path, chunk=_CHUNK):
    """Hex sha256 of the bytes of the file at `path`, read in chunks of `chunk` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
