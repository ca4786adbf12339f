"""The ledger: an append-only JSONL of every sample's fate, the ground truth for resuming.

Rejections are appended (and fsynced) as they happen; kept samples when their shard is committed.
A line cut short by a kill is ignored on reading: its sample simply gets redone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from factory.files import atomic_write
from factory.records import fate_of

BULKY = ("mouth_open", "identity", "alt_identity")  # per-frame lists and embeddings: not worth a ledger line
# reasons that say nothing about the sample (a worker died under it): recorded, but retried by
# the next run instead of counting as its fate
RETRIED_REASONS = ("worker_failed",)


def is_retried(entry: dict[str, Any]) -> bool:
    return (entry.get("reason") or "").startswith(RETRIED_REASONS)


def ledger_entry(key: str, kind: str, meta: dict[str, Any], shard: str | None = None) -> dict[str, Any]:
    """A sample's line: its fate as the record states it (factory.records.fate_of), its shard if any."""
    fate, reason, stage = fate_of(meta)
    entry = {"key": key, "kind": kind, "fate": fate, "reason": reason, "stage": stage,
             "meta": {k: v for k, v in meta.items() if k not in BULKY}}
    if shard is not None:
        entry["shard"] = shard
    return entry


def read_log(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The entries of an append-only JSONL log, up to the first line a kill tore (not JSON). With
    `repair` the file is mended before new lines are appended to it: a torn tail is cut off, and a
    whole last entry that lost only its newline gets it back; either way the next line would
    otherwise be glued onto it, and lost to every later reader."""
    raw = path.read_bytes() if path.exists() else b""
    entries, good = [], 0
    for line in raw.split(b"\n"):
        if not line and good == len(raw):
            break  # the file ends with its newline
        try:
            entries.append(json.loads(line))
        except ValueError:
            break
        good += len(line) + 1
    if repair and good != len(raw):
        with open(path, "r+b") as f:
            if good < len(raw):
                f.truncate(good)
            else:
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
    return entries


class Ledger:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict[str, Any]] = {}
        if path.exists():
            self._load()
        self._file = open(path, "a", encoding="utf-8")

    def _load(self) -> None:
        for entry in read_log(self.path, repair=True):  # a killed run's torn tail: dropped
            if not is_retried(entry):
                self.entries[entry["key"]] = entry

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def append(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        self._file.write("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
        self._file.flush()
        os.fsync(self._file.fileno())
        for e in entries:
            self.entries[e["key"]] = e

    def forget(self, which) -> None:
        """Drop the entries `which(entry)` selects, from memory and (rewritten atomically) the file."""
        self._file.close()
        self.entries = {k: e for k, e in self.entries.items() if not which(e)}
        atomic_write(self.path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in self.entries.values()))
        self._file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self._file.close()
