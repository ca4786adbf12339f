"""One factory process per output folder: two runs writing the same shards and ledger would corrupt
both. The lock is an `fcntl.flock` on OUT/state/run.lock, which the kernel drops when its holder
dies, so the lock of a run killed with `kill -9` is simply free again; the file holds the holder's
PID, for the message.

An object store has no lock: for a URL `out` the flock is on a file named by the URL's hash in
the driver machine's temp folder, so two drivers on one machine are refused. Two drivers on two
machines are not (one Ray job's driver per output, as `ray job submit` gives): their commits
would then collide, and `ConflictingCommit` stops the second.

    with hold_output(out):
        ...  # the run
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from factory import storage
from factory.config import ConfigError

LOCK = Path("state") / "run.lock"


class OutputError(ConfigError):
    """`out` cannot be used: not writable, or another factory process is using it (exit 2)."""


def url_lock(url: str) -> Path:
    """The local lock file standing for an object-store output."""
    name = hashlib.sha1(str(url).rstrip("/").encode()).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / "factory-locks" / f"{name}.lock"


@contextmanager
def hold_output(out: str | Path) -> Iterator[None]:
    if storage.is_url(out):
        with _hold_lock(url_lock(str(out)), storage.redact(str(out)), fresh=False):
            yield
        return
    out = storage.local(out)
    with _hold_lock(out / LOCK, str(out), fresh=not out.exists()):
        yield


@contextmanager
def _hold_lock(path: Path, out: str, fresh: bool) -> Iterator[None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
    except OSError as exc:
        raise OutputError(f"out={out} is not a writable folder ({exc.strerror or exc}): "
                          f"choose another out=...") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise OutputError(f"out={out} is in use by another factory process (PID {holder}); "
                              "wait for it to end, or use another out=...") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        except BaseException:
            if fresh:  # refused before writing anything (bad config, missing weights): leave no folder behind
                _remove_if_only_the_lock(Path(out), path)
            raise
    finally:
        os.close(fd)  # releases the lock (the file stays: removing it would race a new holder)


def holds_output(job):
    """Decorates `job(cfg, ...)`: it runs holding `cfg.out`'s lock."""
    @functools.wraps(job)
    def locked(cfg, *args, **kwargs):
        with hold_output(cfg.out):
            return job(cfg, *args, **kwargs)
    return locked


def _remove_if_only_the_lock(out: Path, lock: Path) -> None:
    try:
        if [p for p in out.rglob("*") if p not in (lock, lock.parent)]:
            return
        lock.unlink()
        lock.parent.rmdir()
        out.rmdir()
    except OSError:
        pass
