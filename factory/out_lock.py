"""One factory process per output folder: two runs writing the same shards and ledger would corrupt
both. The lock is an `fcntl.flock` on OUT/state/run.lock, which the kernel drops when its holder
dies, so the lock of a run killed with `kill -9` is simply free again; the file holds the holder's
PID, for the message.

    with hold_output(out):
        ...  # the run
"""

from __future__ import annotations

import fcntl
import functools
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from factory.config import ConfigError

LOCK = Path("state") / "run.lock"


class OutputError(ConfigError):
    """`out` cannot be used: not writable, or another factory process is using it (exit 2)."""


@contextmanager
def hold_output(out: str | Path) -> Iterator[None]:
    out = Path(out)
    path = out / LOCK
    fresh = not out.exists()
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
                _remove_if_only_the_lock(out, path)
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
