"""The factory's own embedded Ray: reachable from this machine only, in a folder the factory owns,
and cleaned up after (factory/cluster.py starts and stops it).

- Loopback: Ray binds its servers (GCS, raylet, workers, agents) to the node's IP, and on Linux
  turns 127.0.0.1 into the machine's reachable address; its single-machine mode (the default on
  macOS and Windows, `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`) keeps loopback. Switched on only while
  the embedded Ray starts: joining a real cluster later from this process needs the real IP.
- Its own folder: every embedded Ray runs in TMP/factory-ray-UID/<driver pid>-<its start time>/
  (Ray's `_temp_dir`), so the factory can tell its sessions from anyone else's Ray and from each
  other. A driver killed with `kill -9` leaves Ray's agents running (they are not fate-shared with
  it); the next start kills the processes that still use a dead driver's folder, and keeps only the
  newest KEEP dead folders (their logs), so neither processes nor session folders pile up.
- Quiet: Ray logs at the driver's level (`factory -q` logs warnings and errors only, so no
  "Started a local Ray instance"), and its warning that token auth is on (Ray's default for a new
  local cluster, which the factory wants) is dropped: it only says how to turn auth off.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import ray

log = logging.getLogger(__name__)
ROOT = Path(tempfile.gettempdir()) / f"factory-ray-{os.getuid()}"
KEEP = 3  # finished sessions kept for their logs (newest first)
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def start(num_cpus: int | None, num_gpus: int | None) -> Path:
    """Starts an embedded Ray on loopback in this process's own folder; returns the folder."""
    clean_stale()
    folder = ROOT / _owner_name(os.getpid())
    folder.mkdir(parents=True, exist_ok=True)
    _prune_sessions(folder)  # one process may start and stop Ray many times (tests, notebooks)
    main = threading.current_thread() is threading.main_thread()
    caller_sigterm = signal.getsignal(signal.SIGTERM) if main else None
    with _loopback_only(), _without(AUTH_ON_NOTICE):
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, dashboard_host="127.0.0.1",
                 _node_ip_address="127.0.0.1", _temp_dir=str(folder), log_to_driver=True,
                 logging_level=max(logging.getLogger().getEffectiveLevel(), logging.INFO))
    if callable(caller_sigterm):  # ray.init replaced it: the caller's own (the CLI unwinds, shutting Ray down) wins
        signal.signal(signal.SIGTERM, caller_sigterm)
    return folder


def stop() -> None:
    """Shuts the embedded Ray down, and ends what outlives `ray.shutdown` in this driver's folder."""
    if ray.is_initialized():
        ray.shutdown()
    _kill(processes_using(ROOT / _owner_name(os.getpid())))


AUTH_ON_NOTICE = ("ray._private.authentication.authentication_token_setup",
                  "Token authentication is enabled for this Ray cluster")


@contextmanager
def _without(notice: tuple[str, str]) -> Iterator[None]:
    """Drops the log records of logger `notice[0]` that start with `notice[1]`, meanwhile."""
    logger, text = logging.getLogger(notice[0]), notice[1]

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(text)

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def clean_stale() -> None:
    """Kills the leftover processes of dead drivers' sessions and removes all but the newest KEEP
    of their folders. A folder whose driver lives (this one, or another factory run) is left alone."""
    if not ROOT.is_dir():
        return
    dead = [d for d in ROOT.iterdir() if d.is_dir() and not _driver_alive(d.name)]
    for folder in dead:
        _kill(processes_using(folder))
    dead.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    for folder in dead[KEEP:]:
        shutil.rmtree(folder, ignore_errors=True)


def _prune_sessions(folder: Path) -> None:
    """Keeps the newest KEEP - 1 of this process's earlier sessions (none runs now: Ray is down)."""
    sessions = sorted((d for d in folder.glob("session_*") if d.is_dir() and not d.is_symlink()),
                      key=lambda d: d.stat().st_mtime, reverse=True)
    for old in sessions[KEEP - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def processes_using(folder: Path) -> list[int]:
    """PIDs of Ray's own programs (not this process) whose command line names `folder` or that hold
    a file open in it: Ray's agents rename themselves (`ray::DashboardAgent`) but keep their logs
    open there. Anything else (a `tail -f` on a log) is not Ray's, and is left alone."""
    inside, pids = str(folder) + "/", []
    ray_dirs = {os.path.dirname(path) + "/" for path in (ray.__file__, os.path.realpath(ray.__file__))}  # venv links
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if not (cmdline.startswith("ray::") or any(d in cmdline for d in ray_dirs)):
                continue
            if inside in cmdline or any(os.readlink(fd).startswith(inside) for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            log.info("ended leftover Ray process %d of a finished factory session", pid)
        except OSError:
            pass


def _start_ticks(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot): with the PID, names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; fields 1-2 end at the last ')'


def _owner_name(pid: int) -> str:
    return f"{pid}-{_start_ticks(pid)}"


def _driver_alive(name: str) -> bool:
    pid, _, ticks = name.partition("-")
    return pid.isdigit() and _start_ticks(int(pid)) == ticks


@contextmanager
def _loopback_only() -> Iterator[None]:
    from ray._private import ray_constants  # Ray 2.60 reads the switch at import: set it here too

    old_env, old_flag = os.environ.get(SINGLE_MACHINE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(SINGLE_MACHINE, None)
        else:
            os.environ[SINGLE_MACHINE] = old_env
