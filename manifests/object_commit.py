"""Exactly-once shards on object storage (`s3://`, `gs://`, `memory://`: any fsspec URL), where
there is no rename, no append and no partial file to clean up.

The protocol, per shard (e.g. `pairs-000003`) under the run's prefix:
  1. the whole tar is written as ONE object in one PUT, under a name unique to this attempt
     (`shards/pairs-000003.<attempt>.tar`): a killed writer leaves at most a whole, unnamed-by-
     anyone object, never half an object under a name a reader follows;
  2. it is published by its commit record `commits/pairs-000003.json` (object name, size, md5,
     the samples' ledger entries), one PUT, create-if-absent, then read back: the first commit
     wins, and a writer that finds another's record adopts it and deletes its own object;
  3. the manifest (`manifest.json`, the same `wids-shard-index-v1` JSON as on local disk) is
     written last, as one object, from the commit records only. Readers follow the manifest only.

Pairs rejected without files (the local ledger's rejections) are committed in batches as commit
records with no object (`commits/rejections-000000.json`): never in a manifest, only the resume's.

`recover` (run at every start, by the one driver that holds the run's lock) lists the prefix:
shard objects no record names are orphans of a killed attempt and are deleted (their samples
are redone); a record whose object is missing or differs in size/md5 is an error naming the
object, never silently dropped. What the records hold is the resume point.

`ObjectShardSink` has the local `manifests.writer.ShardSink`'s shape (write, reject, done,
entries, next_shard_index, shard_lists, close), so the run can pick either by the kind of `out`.
Fault points (factory.faults) mirror the local writer's: `pair_written` and `rejection_recorded`
(the same names), `object_put` (object written, no record), `object_committed` (record written,
manifest not), `object_manifest` (half the manifest's bytes handed to the store).
Requests: 2 PUTs per shard (object, record) + 1 GET (read-back); 1 PUT per batch of rejections;
the manifest 1 PUT + 1 LIST and a GET per record; `recover` 2 LISTs (+ a GET per object whose
ETag is not its md5, e.g. multipart uploads and memory://).
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import webdataset as wds

from factory import storage
from factory.faults import fault_point
from factory.records import Record
from manifests.format import json_text, manifest_json
from manifests.ledger import is_retried, ledger_entry
from manifests.writer import FIXED_MTIME, KEPT, REJECTED

SHARDS, COMMITS, MANIFEST = "shards", "commits", "manifest.json"
REJECTIONS = "rejections"  # commit records of pairs rejected without files: no shard object
RECORD_KIND = "object-shard-commit-v1"


class DamagedCommit(RuntimeError):
    """A commit record whose shard object is missing or not the bytes it names."""


class ConflictingCommit(RuntimeError):
    """Another writer committed this shard index with other samples: two runs share one prefix."""


@dataclass
class Committed:
    """What `recover` found: the resume point."""
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # shard name -> commit record
    orphans: list[str] = field(default_factory=list)  # shard objects deleted (no record named them)
    repaired: list[str] = field(default_factory=list)  # damaged committed shards dropped (`repair`): redone

    @property
    def keys(self) -> set[str]:
        return {s["key"] for r in self.records.values() for s in r["samples"]}


class Store:
    """The few object operations the protocol needs, counted (PUTs, GETs, LISTs, DELETEs)."""

    def __init__(self, prefix: str):
        self.prefix = str(prefix).rstrip("/")
        self.fs, self.root = storage.url_to_fs(self.prefix)
        self.root = self.root.rstrip("/")
        self.calls: dict[str, int] = defaultdict(int)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def put(self, rel: str, data: bytes, create: bool = False) -> bool:
        """One PUT of the whole object; with `create`, only if absent (False: it existed)."""
        self.calls["put"] += 1
        try:
            self.fs.pipe_file(self.path(rel), data, mode="create" if create else "overwrite")
        except FileExistsError:
            return False
        except OSError as error:  # S3's 412 Precondition Failed, as s3fs passes it on
            if create and "Precondition" in str(error):
                return False
            raise
        return True

    def get(self, rel: str) -> bytes:
        self.calls["get"] += 1
        return self.fs.cat_file(self.path(rel))

    def list(self, rel: str) -> dict[str, dict[str, Any]]:
        """Objects under `rel/` by their name relative to the prefix, with fsspec's info."""
        self.calls["list"] += 1
        self.fs.invalidate_cache(self.path(rel))  # s3fs caches listings: recover must see what is there now
        found = self.fs.find(self.path(rel), detail=True) if self.fs.exists(self.path(rel)) else {}
        return {p.strip("/")[len(self.root.strip("/")) + 1:]: info for p, info in found.items()
                if info.get("type") != "directory"}

    def delete(self, rel: str) -> None:
        self.calls["delete"] += 1
        self.fs.rm_file(self.path(rel))

    def md5_matches(self, rel: str, info: dict[str, Any], md5sum: str) -> bool:
        """A single-PUT S3 object's ETag is its md5 (no download); otherwise the bytes are hashed."""
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        if etag and "-" not in etag and len(etag) == 32:
            return etag == md5sum
        return hashlib.md5(self.get(rel)).hexdigest() == md5sum


def shard_object(shard: str, attempt: str) -> str:
    return f"{SHARDS}/{shard}.{attempt}.tar"


def commit_name(shard: str) -> str:
    return f"{COMMITS}/{shard}.json"


def manifest_entry(record: dict[str, Any]) -> dict[str, Any]:
    """The manifest's shardlist entry (manifests.format.shard_entry's fields) of a commit record."""
    return {"url": record["object"], "nsamples": record["nsamples"],
            "filesize": record["filesize"], "md5sum": record["md5sum"]}


def read_records(store: Store) -> dict[str, dict[str, Any]]:
    records = {}
    for rel in sorted(store.list(COMMITS)):
        record = json.loads(store.get(rel))
        if record.get("__kind__") != RECORD_KIND:
            raise DamagedCommit(f"{store.prefix}/{rel}: not a {RECORD_KIND} commit record")
        records[record["shard"]] = record
    return records


def recover(prefix: str | Store, repair: bool = False) -> Committed:
    """The committed shards under `prefix`, every one checked (size, md5), and orphan shard objects
    deleted. A record whose object is missing or differs raises DamagedCommit naming it; with
    `repair` (a run resuming) it is deleted with its object instead and named in `repaired`, so
    the run makes its samples again, as the local writer does. Only the run's one driver may
    call it: a live writer's uncommitted object is an orphan."""
    store = prefix if isinstance(prefix, Store) else Store(prefix)
    records = read_records(store)
    objects = store.list(SHARDS)
    named, repaired = set(), []
    for shard, record in list(records.items()):
        if record["object"] is None:  # a batch of rejections: nothing to check
            continue
        problem = damage(store, shard, record, objects.get(record["object"]))
        if problem and not repair:
            raise DamagedCommit(problem)
        if problem:
            store.delete(commit_name(shard))  # the record first: a kill between leaves an orphan, not a lie
            del records[shard]
            repaired.append(record["object"])
            continue
        named.add(record["object"])
    orphans = sorted(set(objects) - named)
    for rel in orphans:
        store.delete(rel)  # a killed attempt's object (or a damaged one): its samples get redone
    return Committed(records, orphans, repaired)


def damage(store: Store, shard: str, record: dict[str, Any], info: dict[str, Any] | None) -> str | None:
    """What is wrong with a committed shard's object (None: it is the bytes its record names)."""
    rel = record["object"]
    if info is None:
        return f"{store.prefix}/{rel}: committed as shard {shard} but missing"
    if int(info["size"]) != record["filesize"] or not store.md5_matches(rel, info, record["md5sum"]):
        return (f"{store.prefix}/{rel}: committed as shard {shard} but its size/md5 differ "
                f"from the record ({record['filesize']} bytes, md5 {record['md5sum']})")
    return None


def commit_shard(store: Store, shard: str, data: bytes, samples: list[dict[str, Any]],
                 attempt: str) -> dict[str, Any]:
    """Publish one shard's bytes exactly once; the commit record that holds (ours or the first writer's)."""
    rel = shard_object(shard, attempt)
    store.put(rel, data)
    fault_point("object_put")
    record = {"__kind__": RECORD_KIND, "shard": shard, "object": rel, "filesize": len(data),
              "md5sum": hashlib.md5(data).hexdigest(), "nsamples": len(samples), "samples": samples}
    held = commit_record(store, record)
    fault_point("object_committed")
    return held


def commit_record(store: Store, record: dict[str, Any]) -> dict[str, Any]:
    """Write a commit record if none exists for its index, read it back: the one that holds. A
    writer that lost deletes its own shard object; other samples than its own are a conflict."""
    name, body = commit_name(record["shard"]), json.dumps(record, sort_keys=True).encode()
    store.put(name, body, create=True)
    held = json.loads(store.get(name))  # read back: a store that ignores create-if-absent still has one winner
    if held != json.loads(body):
        if record["object"] is not None:
            store.delete(record["object"])  # another attempt committed this index first: adopt its record
        if sorted(s["key"] for s in held["samples"]) != sorted(s["key"] for s in record["samples"]):
            raise ConflictingCommit(f"{store.prefix}/{name}: committed by another writer "
                                    f"({held['object']}) with other samples; two runs write to one prefix")
    return held


def commit_rejections(store: Store, index: int, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of rejections (ledger entries, no files) as one commit record without an object."""
    shard = f"{REJECTIONS}-{index:06d}"
    return commit_record(store, {"__kind__": RECORD_KIND, "shard": shard, "object": None, "filesize": 0,
                                 "md5sum": None, "nsamples": len(samples), "samples": samples})


def publish_manifest(store: Store, records: dict[str, dict[str, Any]], config: dict, stats: dict,
                     **options: Any) -> bytes:
    """manifest.json from the commit records, built by manifests.format (the same JSON as on local
    disk), written as one object after every shard it names is committed; its bytes."""
    kept = [manifest_entry(r) for s, r in records.items() if s.startswith(f"{KEPT}-")]
    rejected = [manifest_entry(r) for s, r in records.items() if s.startswith(f"{REJECTED}-")]
    manifest = manifest_json(storage.name(store.prefix), kept, config, stats, rejected=rejected, **options)
    data = json_text(manifest).encode()
    store.calls["put"] += 1
    # one object, streamed inside an fsspec transaction: it appears whole when the transaction
    # commits, and an error (or a kill) before that leaves no object, on S3 and on memory:// alike
    with store.fs.transaction, store.fs.open(store.path(MANIFEST), "wb") as f:
        f.write(data[: len(data) // 2])
        fault_point("object_manifest")
        f.write(data[len(data) // 2:])
    return data


class ObjectShardSink:
    """manifests.writer.ShardSink on an object-store prefix: tars are built in memory and each is
    committed by `commit_shard` when webdataset's ShardWriter closes it. Rejections (pairs without
    files) are committed in batches of `maxcount` and at close, not one request each as the local
    ledger's fsynced line: a kill loses at most a batch, whose samples are redone."""

    def __init__(self, out: str, maxcount: int, maxsize: int, attempt: str | None = None):
        self.out = str(out).rstrip("/")
        self.store = Store(self.out)
        state = recover(self.store, repair=True)
        self.records, self.orphans = state.records, state.orphans
        self.repaired = state.repaired  # damaged committed shards, dropped: their samples get redone
        # a sample whose worker died is recorded but retried, as the local ledger does on reloading
        self.keys = {s["key"]: s for r in self.records.values() for s in r["samples"] if not is_retried(s)}
        self.attempt = attempt or uuid.uuid4().hex[:12]  # unique per attempt: no two writers share a name
        self.maxcount, self.maxsize = maxcount, maxsize
        self._writers: dict[str, wds.ShardWriter] = {}
        self._buffers: dict[str, io.BytesIO] = {}
        self._pending: dict[str, list[Record]] = defaultdict(list)
        self._rejections: list[dict[str, Any]] = []
        self.written = 0

    # -- resume --------------------------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        return list(self.keys.values())

    def done(self, key: str) -> bool:
        return key in self.keys

    def entry(self, key: str) -> dict[str, Any] | None:
        """The sample's recorded fate (a ledger entry), None when it has none yet."""
        return self.keys.get(key) or next((e for e in self._rejections if e["key"] == key), None)

    def next_shard_index(self, prefix: str = KEPT) -> int:
        existing = [int(s.split("-")[1]) for s in self.records if s.startswith(f"{prefix}-")]
        return max(existing, default=-1) + 1

    def shard_lists(self) -> tuple[list[dict], list[dict]]:
        """(kept shards, rejected shards) committed so far, as manifest entries."""
        kept = [manifest_entry(r) for s, r in sorted(self.records.items()) if s.startswith(f"{KEPT}-")]
        rejected = [manifest_entry(r) for s, r in sorted(self.records.items()) if s.startswith(f"{REJECTED}-")]
        return kept, rejected

    # -- writing -------------------------------------------------------------------------------

    def reject(self, record: Record) -> None:
        if record.key in self.keys or any(e["key"] == record.key for e in self._rejections):
            return
        self._rejections.append(ledger_entry(record.key, record.kind, record.meta))
        if len(self._rejections) >= self.maxcount:
            self._commit_rejections()
        fault_point("rejection_recorded")

    def _commit_rejections(self) -> None:
        if self._rejections:
            held = commit_rejections(self.store, self.next_shard_index(REJECTIONS), self._rejections)
            self.records[held["shard"]] = held
            self.keys.update({s["key"]: s for s in held["samples"]})
            self._rejections = []

    def write(self, record: Record) -> None:
        """A pair with its files: kept, or (marked `filtered`) set aside in a rejected shard."""
        if record.key in self.keys:
            return
        writer = self._writer(REJECTED if record.filtered else KEPT)
        writer.write({"__key__": record.key, **record.media.files})
        self._pending[writer.fname].append(record)
        self.written += 0 if record.filtered else 1
        fault_point("pair_written")

    def _writer(self, prefix: str) -> wds.ShardWriter:
        if prefix not in self._writers:
            self._writers[prefix] = wds.ShardWriter(
                f"{prefix}-%06d", maxcount=self.maxcount, maxsize=self.maxsize, post=self._publish,
                opener=self._open, start_shard=self.next_shard_index(prefix), verbose=0, mtime=FIXED_MTIME)
        return self._writers[prefix]

    def _open(self, shard: str) -> io.BytesIO:
        self._buffers[shard] = io.BytesIO()  # TarWriter leaves a stream it did not open unclosed
        return self._buffers[shard]

    def _publish(self, shard: str) -> None:
        data = self._buffers.pop(shard).getvalue()
        samples = [ledger_entry(r.key, "pair", r.meta, shard=shard_object(shard, self.attempt))
                   for r in self._pending.pop(shard, [])]
        record = commit_shard(self.store, shard, data, samples, self.attempt)
        self.records[shard] = record
        self.keys.update({s["key"]: s for s in record["samples"]})

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._commit_rejections()

    def discard(self) -> None:
        """Drop the shards still being filled, unpublished (after an error): their samples get redone."""
        for writer in self._writers.values():
            if getattr(writer, "tarstream", None) is not None:  # close() deletes it
                writer.tarstream.close()
                writer.tarstream = None
        self._writers.clear()
        self._buffers.clear()
        self._pending.clear()
        self._rejections = []

    def write_manifest(self, config: dict, stats: dict, **options: Any) -> str:
        """The manifest, last, from the commit records on the store (not this process's memory); its URL."""
        publish_manifest(self.store, read_records(self.store), config, stats, **options)
        return f"{self.out}/{MANIFEST}"
