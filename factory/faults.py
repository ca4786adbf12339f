"""Fault injection: named points where a run can be made to die or fail on purpose, so tests can
prove that a killed run resumes exactly once and that dead workers are retried.

    FACTORY_FAULTS="shard_renamed=kill"            SIGKILL this process at the first hit
    FACTORY_FAULTS="generate/KEY=exit*2"           os._exit(1) in whatever process generates KEY,
                                                   the first 2 times (counted across processes)
    FACTORY_FAULTS="filter=raise*1,pair_written=kill@3"   raise once; kill at the 3rd hit

Hits are counted in files under FACTORY_FAULTS_STATE (a directory) when it is set, so a count
survives the worker that died; otherwise per process. Unset, every call is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


class InjectedFault(RuntimeError):
    pass


def _parse(spec: str) -> dict[str, tuple[str, int, int]]:
    """point -> (action, first hit that triggers, how many triggers)."""
    rules = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        point, _, action = item.partition("=")
        at, times = 1, 1
        if "@" in action:
            action, at_text = action.split("@", 1)
            at = int(at_text)
        if "*" in action:
            action, times_text = action.split("*", 1)
            times = int(times_text)
        rules[point] = (action, at, times)
    return rules


_RULES = _parse(os.environ.get("FACTORY_FAULTS", ""))
_COUNTS: dict[str, int] = {}


def _hit(point: str) -> int:
    state = os.environ.get("FACTORY_FAULTS_STATE")
    if not state:
        _COUNTS[point] = _COUNTS.get(point, 0) + 1
        return _COUNTS[point]
    path = Path(state) / point.replace("/", "__")
    with open(path, "a") as f:  # one byte per hit; O_APPEND keeps concurrent workers honest
        f.write(".")
    return path.stat().st_size


def fault_point(point: str, key: str | None = None) -> None:
    if not _RULES:
        return
    for name in ([f"{point}/{key}"] if key else []) + [point]:
        if name not in _RULES:
            continue
        action, at, times = _RULES[name]
        n = _hit(name)
        if at <= n < at + times:
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif action == "exit":
                os._exit(1)
            elif action == "raise":
                raise InjectedFault(f"injected fault at {name} (hit {n})")
        return
