"""The object-store commit protocol (manifests/object_commit.py): first commit wins, orphans are
deleted, a damaged commit is an error naming its object, the manifest comes last; and a publisher
killed with SIGKILL at each fault point on the local S3 server resumes to an uninterrupted run's
manifest and shards, with no orphan left.

Run as a script (`python -m tests.test_object_commit PREFIX`) it publishes the test's records:
the subprocess the kill tests kill (FACTORY_FAULTS)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import numpy as np
import pytest

import factory.faults as faults
from factory.payload import PairMedia
from factory.records import Record, fate_of
from manifests.object_commit import (ConflictingCommit, DamagedCommit, ObjectShardSink, Store, commit_shard,
                                     recover, shard_object)
from manifests.reader import iter_pairs, shard_urls

N, MAXCOUNT = 10, 3  # kept 3 + 2, filtered 3 (one rejected shard), 2 rejections (one batch)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def records(n: int = N) -> list[Record]:
    """Deterministic pairs with a few KiB of files each; some filtered (a rejected shard), some
    rejected without files (a batch of rejections)."""
    out = []
    for i in range(n):
        payload = np.random.default_rng(i).integers(0, 256, 3000, dtype=np.uint8).tobytes()
        meta = {"i": i, **({"filtered": "sync", "filtered_by": "filter"} if i % 3 == 2 else {}),
                **({"rejected": "no_face", "rejected_by": "ingest"} if i % 5 == 4 else {})}
        files = {"meta.json": json.dumps(meta).encode(), "payload.bin": payload}
        out.append(Record(f"pair-{i:03d}", "pair", media=PairMedia(files=files), meta=meta))
    return out


def publish(prefix: str, n: int = N) -> ObjectShardSink:
    """What a run does: recover, write what is not done, close, manifest last."""
    sink = ObjectShardSink(prefix, maxcount=MAXCOUNT, maxsize=10**9)
    try:
        for record in records(n):
            sink.reject(record) if record.rejected else sink.write(record)
        sink.close()
    except faults.InjectedFault:
        sink.discard()
        raise
    sink.write_manifest({"seed": 0}, {"pairs": n})
    return sink


@pytest.fixture
def mem():
    prefix = f"memory://t-{uuid.uuid4().hex[:8]}/run"
    yield prefix
    store = Store(prefix)
    if store.fs.exists(store.root):
        store.fs.rm(store.root, recursive=True)


@pytest.fixture
def no_faults(monkeypatch):
    """Fault rules set for this test only, hit counts from zero."""
    def set_rules(spec: str) -> None:
        monkeypatch.setattr(faults, "_RULES", faults._parse(spec))
        monkeypatch.setattr(faults, "_COUNTS", {})
    return set_rules


def objects(prefix: str, under: str) -> list[str]:
    return sorted(Store(prefix).list(under))


# -- unit tests on memory:// -----------------------------------------------------------------------

def test_publish_reads_back_with_the_reader(mem):
    sink = publish(mem)
    manifest = f"{mem}/manifest.json"
    kept = [r.key for r in records() if not (r.filtered or r.rejected)]
    assert [s["__key__"] for s in iter_pairs(manifest, decode=False, augment=False)] == kept
    assert len(shard_urls(manifest, check=True)) == 2  # kept shards: 3 + 2 samples
    # object + record per shard (2 kept, 1 rejected), one record for the rejections, the manifest
    assert sink.store.calls["put"] == 2 * 3 + 1 + 1
    assert objects(mem, "shards") == sorted(r["object"] for r in sink.records.values() if r["object"])
    assert fates(mem) == reference_fates()


def fates(prefix: str) -> list[tuple]:
    return sorted((s["key"], s["fate"], s["reason"]) for r in recover(prefix).records.values() for s in r["samples"])


def reference_fates() -> list[tuple]:
    return sorted((r.key, *fate_of(r.meta)[:2]) for r in records())


def test_rejections_are_committed_and_not_redone(mem):
    sink = ObjectShardSink(mem, MAXCOUNT, 10**9)
    rejected = [r for r in records() if r.rejected]
    sink.reject(rejected[0])
    sink.reject(rejected[0])  # once only
    sink.close()
    resumed = ObjectShardSink(mem, MAXCOUNT, 10**9)
    assert resumed.done(rejected[0].key) and not resumed.done(rejected[1].key)
    assert [e["fate"] for e in resumed.entries()] == ["rejected"]
    assert list(resumed.records) == ["rejections-000000"] and resumed.shard_lists() == ([], [])


def test_first_commit_wins_and_the_loser_deletes_its_object(mem):
    store = Store(mem)
    samples = [{"key": "a"}, {"key": "b"}]
    first = commit_shard(store, "pairs-000000", b"first bytes", samples, attempt="one")
    second = commit_shard(store, "pairs-000000", b"other bytes", samples, attempt="two")
    assert second == first and first["object"] == shard_object("pairs-000000", "one")
    assert objects(mem, "shards") == [first["object"]]
    assert list(recover(mem).records) == ["pairs-000000"]


def test_a_conflicting_commit_is_an_error(mem):
    store = Store(mem)
    commit_shard(store, "pairs-000000", b"x", [{"key": "a"}], attempt="one")
    with pytest.raises(ConflictingCommit, match="pairs-000000.json"):
        commit_shard(store, "pairs-000000", b"y", [{"key": "z"}], attempt="two")
    assert objects(mem, "shards") == [shard_object("pairs-000000", "one")]


def test_orphans_are_deleted_and_their_samples_redone(mem, no_faults):
    no_faults("object_put=raise@2")  # the second shard's object is written, its record never
    with pytest.raises(faults.InjectedFault):
        publish(mem)
    assert len(objects(mem, "shards")) == 2 and len(objects(mem, "commits")) == 1
    state = recover(mem)
    assert len(state.orphans) == 1 and objects(mem, "shards") == [r["object"] for r in state.records.values()]
    assert state.keys == {"pair-000", "pair-001", "pair-003"}  # the first kept shard: the resume point
    no_faults("")
    sink = publish(mem)
    assert sink.orphans == [] and fates(mem) == reference_fates()


def test_damaged_or_missing_object_is_an_error_naming_it_and_a_resume_redoes_it(mem):
    sink = publish(mem)
    record = sink.records["pairs-000000"]
    store = Store(mem)
    store.put(record["object"], bytes(record["filesize"]))  # same size, other bytes
    with pytest.raises(DamagedCommit, match=record["object"]):
        recover(mem)
    store.delete(record["object"])
    with pytest.raises(DamagedCommit, match=f"{record['object']}: committed as shard pairs-000000 but missing"):
        recover(mem)
    # a run resuming drops the damaged commit, names it, and makes its samples again
    resumed = publish(mem)
    assert resumed.repaired == [record["object"]]
    assert fates(mem) == reference_fates() and recover(mem).orphans == []


def test_damaged_object_on_s3_is_found_by_its_etag(s3_bucket):
    prefix = f"{s3_bucket}/run"
    records = publish(prefix).records
    record = records["pairs-000000"]
    store = Store(prefix)
    store.put(record["object"], bytes(record["filesize"]))
    with pytest.raises(DamagedCommit, match=record["object"]):
        recover(store)
    assert store.calls["get"] == len(records)  # the records only: md5s from the ETags, no shard downloaded


def test_manifest_comes_last_and_never_half(mem, no_faults):
    no_faults("object_committed=raise@3")  # every shard but the last is committed
    with pytest.raises(faults.InjectedFault):
        publish(mem)
    assert not Store(mem).fs.exists(Store(mem).path("manifest.json"))
    no_faults("object_manifest=raise")  # half the manifest's bytes handed to the store
    with pytest.raises(faults.InjectedFault):
        publish(mem)
    assert not Store(mem).fs.exists(Store(mem).path("manifest.json"))
    no_faults("")
    publish(mem)
    manifest = json.loads(Store(mem).get("manifest.json"))
    committed = recover(mem).records
    assert sorted(e["url"] for e in manifest["shardlist"] + manifest["rejected_shardlist"]) == \
        sorted(r["object"] for r in committed.values() if r["object"])


def test_shards_are_the_local_writers_bytes(mem, tmp_path):
    from manifests.writer import ShardSink

    local = ShardSink(tmp_path / "out", maxcount=MAXCOUNT, maxsize=10**9)
    for record in records():
        local.reject(record) if record.rejected else local.write(record)
    local.close()
    sink = publish(mem)
    assert len(sink.records) == 4 and len(list((tmp_path / "out" / "shards").glob("*.tar"))) == 3
    for shard, record in sink.records.items():
        if record["object"] is None:  # the rejections: in the local ledger, no shard
            continue
        assert Store(mem).get(record["object"]) == (tmp_path / "out" / "shards" / f"{shard}.tar").read_bytes()


# -- kill -9 at each fault point on the local S3 server, then resume ---------------------------------

def run_killed(prefix: str, fault: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACTORY_FAULTS": f"{fault.split('@')[0]}=kill@{fault.split('@')[1]}",
           "PYTHONPATH": ROOT}
    env.pop("FACTORY_FAULTS_STATE", None)
    return subprocess.run([sys.executable, "-m", "tests.test_object_commit", prefix], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def snapshot(prefix: str) -> dict:
    """The manifest (shard names aside: they carry the attempt) and every listed shard's bytes."""
    store = Store(prefix)
    manifest = json.loads(store.get("manifest.json"))
    lists = {k: [(e["nsamples"], e["filesize"], e["md5sum"], store.get(e["url"])) for e in manifest.pop(k)]
             for k in ("shardlist", "rejected_shardlist")}
    return {"manifest": manifest, **lists}


@pytest.fixture(scope="module")
def reference_prefix(s3_endpoint):
    from tests.s3_server import make_bucket, s3_environment

    with s3_environment(s3_endpoint):
        prefix = make_bucket("object-commit-reference") + "/run"
        publish(prefix)
        yield prefix


@pytest.mark.parametrize("fault", ["pair_written@4", "object_put@2", "object_committed@2", "rejection_recorded@2",
                                   "object_manifest@1"])
def test_kill_at_point_then_resume_on_s3(s3_bucket, reference_prefix, fault):
    prefix = f"{s3_bucket}/run"
    killed = run_killed(prefix, fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not Store(prefix).fs.exists(Store(prefix).path("manifest.json"))  # readers see nothing yet
    sink = publish(prefix)  # the resume: recover, the rest, the manifest
    assert (len(sink.orphans) == 1) == (fault == "object_put@2")  # only there was an object left unnamed
    assert snapshot(prefix) == snapshot(reference_prefix)
    assert recover(prefix).orphans == []
    assert objects(prefix, "shards") == sorted(r["object"] for r in sink.records.values() if r["object"])
    assert fates(prefix) == fates(reference_prefix) == reference_fates()
    kept = [r.key for r in records() if not (r.filtered or r.rejected)]
    assert [s["__key__"] for s in iter_pairs(f"{prefix}/manifest.json", decode=False, augment=False)] == kept


if __name__ == "__main__":
    publish(sys.argv[1])


def test_a_sample_whose_worker_died_is_retried_by_the_next_run(mem):
    sink = ObjectShardSink(mem, maxcount=MAXCOUNT, maxsize=10**9)
    died = Record("pair-died", "pair", meta={"i": 0}).reject("worker_failed:RayActorError", "generate")
    sink.reject(died)
    sink.reject(Record("pair-bad", "pair", meta={"i": 1}).reject("no_face", "ingest"))
    sink.close()
    assert sink.done("pair-died")  # this run recorded it
    resumed = ObjectShardSink(mem, maxcount=MAXCOUNT, maxsize=10**9)
    assert not resumed.done("pair-died") and resumed.done("pair-bad")  # as the local ledger on reloading
