"""Durable files: a file under its final name is complete, whatever kills the process, and a
file's digest is computed the same way everywhere.

An atomic write goes to a temporary name in the same directory (a rename is atomic only within
one file system), is fsynced, renamed over the target with `os.replace`, and then the directory
is fsynced so the rename itself survives a power cut. The temporary name is fixed and hidden
(`.<name>.tmp`): input discovery skips dot files, and a rerun after a kill overwrites the
leftover instead of piling up new ones. So: one writer per path at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHUNK = 1 << 20  # 1 MiB: hashing a multi-GB video never holds more than this


def fsync_file(path: str | Path) -> None:
    """Flush a closed file's data to disk (writers that own the file handle may not expose it)."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries, so a rename or a new file in it survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it replaces `path` durably,
    on an exception it is removed and `path` is left as it was.

    `suffix` ends the temporary name: writers that pick a format from the extension, or append
    one (np.savez adds `.npz` to names without it), need it to keep the extension, e.g.
    `suffix=".tmp.npz"`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{suffix}")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write `data` (str as UTF-8) to `path` atomically and durably."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks (any `hashlib` algorithm: sha256, md5...)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()
