"""Atomic WebDataset shards and the bookkeeping that makes a killed run resume exactly once.

Shards are written under a `.partial` name and renamed by webdataset's `post` hook once the tar
is closed and fsynced, so a tar under its final name is always complete. Then the shard's keys go
to the ledger. On reopening: `.partial` leftovers are deleted (their samples are redone), and a
final tar the ledger does not know (killed between rename and ledger) is adopted from its
contents. A sample is thus done exactly when it is in a final tar or recorded as rejected.

Pairs that failed a filter threshold under `write.keep_rejected` go to `rejected-*.tar` beside the
kept `pairs-*.tar`, with the same guarantees: `factory refilter` can then loosen a threshold.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from dataclasses import dataclass, field

import webdataset as wds

from factory.faults import fault_point
from factory.files import atomic_write, file_digest, fsync_dir, fsync_file
from factory.records import Record
from factory.stage import Resources
from manifests.format import shard_entry, write_manifest
from manifests.ledger import Ledger, ledger_entry, read_log

@dataclass
class WriteConfig:
    shard_maxcount: int = 64
    shard_maxsize: int = 1_000_000_000
    video_crf: int = 18
    previews: int = 16  # side-by-side previews to write (0 = none)
    keep_rejected: bool = True  # pairs failing a threshold go to rejected-*.tar, so refilter can loosen
    resources: Resources = field(default_factory=lambda: Resources(pool_size=2))  # the encode stage's


PARTIAL = ".partial"
KEPT, REJECTED = "pairs", "rejected"  # shard name prefixes
FIXED_MTIME = 0  # tar member times carry no information; fixed, shards are byte-reproducible


def safe_member(name: str) -> bool:
    return not (name.startswith("/") or ".." in Path(name).parts)


def tar_keys(path: Path) -> tuple[list[str], dict[str, dict]]:
    """Sample keys in a tar, and each sample's meta.json."""
    keys, metas = [], {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if not safe_member(member.name):
                raise ValueError(f"unsafe member name {member.name!r} in {path}")
            key, _, ext = member.name.partition(".")
            if key not in metas:
                keys.append(key)
                metas[key] = {}
            if ext == "meta.json":
                metas[key] = json.loads(tar.extractfile(member).read())
    return keys, metas


def shard_intact(path: Path, entry: dict[str, Any]) -> bool:
    if not path.is_file() or path.stat().st_size != entry["filesize"]:
        return False
    return file_digest(path, "md5") == entry["md5sum"]


def read_shard_log(path: Path, repair: bool = False) -> dict[str, dict[str, Any]]:
    """Committed shards by url; a line torn by a kill ends the log (its shard gets adopted). A run
    mends the log (`repair`) before appending: a line glued onto a torn one would be lost, and its
    shard with it, unprotected by the size and md5 check at the next start."""
    return {entry["url"]: entry for entry in read_log(path, repair)}


class ShardSink:
    def __init__(self, out: Path, maxcount: int, maxsize: int):
        self.out = Path(out)
        self.shard_dir = self.out / "shards"
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.out / "state" / "ledger.jsonl")
        self.shards_path = self.out / "state" / "shards.jsonl"
        self.shards: dict[str, dict[str, Any]] = self._load_shards()
        self.repaired = self._drop_damaged()  # urls of committed shards found damaged: their samples get redone
        self._recover()
        self.maxcount, self.maxsize = maxcount, maxsize
        self._writers: dict[str, wds.ShardWriter] = {}
        self._pending: dict[str, list[Record]] = defaultdict(list)
        self.written = 0

    # -- resume --------------------------------------------------------------------------------

    def _load_shards(self) -> dict[str, dict[str, Any]]:
        return read_shard_log(self.shards_path, repair=True)

    def _drop_damaged(self) -> list[str]:
        """A committed shard whose size or md5 is not what its log line says (truncated, bit-flipped,
        deleted) is removed with its ledger lines, so this run makes its samples again."""
        damaged = [url for url, entry in self.shards.items() if not shard_intact(self.out / url, entry)]
        if damaged:
            for url in damaged:
                (self.out / url).unlink(missing_ok=True)
                del self.shards[url]
            atomic_write(self.shards_path, "".join(json.dumps(e) + "\n" for e in self.shards.values()))
            self.ledger.forget(lambda entry: entry.get("shard") in damaged)
        return damaged

    def _recover(self) -> None:
        for leftover in self.shard_dir.glob(f"*{PARTIAL}"):
            leftover.unlink()
        for tar in sorted(self.shard_dir.glob("*.tar")):
            url = tar.relative_to(self.out).as_posix()
            if url in self.shards:
                continue
            keys, metas = tar_keys(tar)  # renamed, but the ledger never heard of it: adopt it
            self._commit(tar, [(k, metas[k]) for k in keys])

    def entries(self) -> list[dict[str, Any]]:
        """Every fate recorded so far (this run and the runs it resumed)."""
        return list(self.ledger.entries.values())

    def done(self, key: str) -> bool:
        return key in self.ledger

    def entry(self, key: str) -> dict[str, Any] | None:
        """The sample's recorded fate (its ledger entry), None when it has none yet."""
        return self.ledger.entries.get(key)

    def next_shard_index(self, prefix: str = KEPT) -> int:
        existing = [int(p.name.split("-")[1].split(".")[0]) for p in self.shard_dir.glob(f"{prefix}-*.tar")]
        return max(existing, default=-1) + 1

    def shard_lists(self) -> tuple[list[dict], list[dict]]:
        """(kept shards, rejected shards) committed so far."""
        kept = [e for url, e in self.shards.items() if Path(url).name.startswith(f"{KEPT}-")]
        return kept, [e for e in self.shards.values() if e not in kept]

    # -- writing -------------------------------------------------------------------------------

    def reject(self, record: Record) -> None:
        if record.key in self.ledger:
            return
        self.ledger.append([ledger_entry(record.key, record.kind, record.meta)])
        fault_point("rejection_recorded")

    def write(self, record: Record) -> None:
        """A pair with its files: kept, or (marked `filtered`) set aside in a rejected shard."""
        if record.key in self.ledger:
            return
        writer = self._writer(REJECTED if record.filtered else KEPT)
        sample = {"__key__": record.key}
        sample.update(record.media.files)
        writer.write(sample)
        self._pending[writer.fname].append(record)
        self.written += 0 if record.filtered else 1
        fault_point("pair_written")

    def _writer(self, prefix: str) -> wds.ShardWriter:
        if prefix not in self._writers:
            pattern = str(self.shard_dir / f"{prefix}-%06d.tar{PARTIAL}")
            self._writers[prefix] = wds.ShardWriter(
                pattern, maxcount=self.maxcount, maxsize=self.maxsize, post=self._finalise,
                start_shard=self.next_shard_index(prefix), verbose=0, mtime=FIXED_MTIME)
        return self._writers[prefix]

    def _finalise(self, partial_name: str) -> None:
        partial = Path(partial_name)
        fsync_file(partial)
        final = partial.with_name(partial.name[: -len(PARTIAL)])
        os.replace(partial, final)  # not atomic_path: the .partial name is the resume protocol
        fsync_dir(final.parent)
        fault_point("shard_renamed")
        records = self._pending.pop(partial_name, [])
        self._commit(final, [(r.key, r.meta) for r in records])

    def _commit(self, tar: Path, samples: list[tuple[str, dict]]) -> None:
        entry = shard_entry(tar, len(samples), self.out)
        self.ledger.append([ledger_entry(key, "pair", meta, shard=entry["url"]) for key, meta in samples])
        fault_point("shard_committed")
        with open(self.shards_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.shards[entry["url"]] = entry

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self.ledger.close()

    def write_manifest(self, config: dict, stats: dict, **options: Any) -> str:
        """manifest.json from the committed shards, written atomically; its path."""
        kept, rejected = self.shard_lists()
        write_manifest(self.out / "manifest.json", kept, config, stats, rejected, **options)
        return str(self.out / "manifest.json")
