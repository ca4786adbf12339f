"""`factory verify` and `factory report` on object storage (issue 15): a run published on
`memory://` (and on the local S3 server) by the object-store commit protocol verifies whole, and
each way its objects can be damaged is reported by name; the table, manifest, previews and the
report page are read and written through fsspec; a finished local run copied to a URL verifies
exactly as on disk and its report page passes the report tests' own checks."""

from __future__ import annotations

import io
import json
import tarfile
import uuid

import numpy as np
import pytest

from factory import storage
from factory.payload import PairMedia
from factory.previews import preview_location, write_preview
from factory.records import Record
from manifests.format import read_manifest, write_json_atomic, write_manifest
from manifests.object_commit import ObjectShardSink, Store, shard_object
from manifests.sample import REQUIRED_MEMBERS
from manifests.table import read_table, write_table
from manifests.verify import not_a_run, verify

N, MAXCOUNT = 8, 3  # kept 0,1,3,4,6 (two shards of 3 + 2); 2, 5 filtered (a rejected shard); 7 rejected


def members(i: int) -> dict[str, bytes]:
    """Every member a format-2 sample needs (manifests.sample.REQUIRED_MEMBERS), in its real
    container format (npy, npz, wav, png, json); the videos are small deterministic bytes: verify
    checks a sample's members, not its pixels."""
    import cv2
    import soundfile as sf

    rng = np.random.default_rng(i)

    def npy(array: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.save(buf, array)
        return buf.getvalue()

    def wav() -> bytes:
        buf = io.BytesIO()
        sf.write(buf, rng.integers(-3000, 3000, 1600).astype(np.int16), 16000, format="WAV")
        return buf.getvalue()

    alpha = io.BytesIO()
    np.savez_compressed(alpha, alpha=rng.integers(0, 256, (4, 16, 16), dtype=np.uint8))
    files = {"real.mp4": rng.bytes(2000), "syn_region.mp4": rng.bytes(1000), "alpha.npz": alpha.getvalue(),
             "real.wav": wav(), "alt.wav": wav(), "real_landmarks.npy": npy(rng.random((4, 478, 2), np.float32)),
             "syn_landmarks.npy": npy(rng.random((4, 478, 2), np.float32)),
             "real_landmarks_valid.npy": npy(np.ones(4, bool)), "syn_landmarks_valid.npy": npy(np.ones(4, bool)),
             "transforms.npy": npy(rng.random((4, 2, 3))),
             "mask.png": cv2.imencode(".png", np.zeros((16, 16), np.uint8))[1].tobytes(),
             "meta.json": json.dumps({"i": i}).encode()}
    assert set(files) == REQUIRED_MEMBERS
    return files


def records() -> list[Record]:
    out = []
    for i in range(N):
        meta = {"i": i, **({"filtered": "sync_below_3", "filtered_by": "sync"} if i % 3 == 2 else {}),
                **({"rejected": "no_face", "rejected_by": "ingest"} if i == 7 else {})}
        out.append(Record(f"pair-{i:03d}", "pair", media=PairMedia(files=members(i)), meta=meta))
    return out


KEPT = [f"pair-{i:03d}" for i in (0, 1, 3, 4, 6)]


def publish_run(prefix: str) -> ObjectShardSink:
    """What `factory run` leaves on object storage: committed shards, the table, the manifest last."""
    sink = ObjectShardSink(prefix, maxcount=MAXCOUNT, maxsize=10**9)
    for record in records():
        sink.reject(record) if record.rejected else sink.write(record)
    sink.close()
    write_table(storage.join(prefix, "samples.parquet"), sink.entries())
    sink.write_manifest({"seed": 0}, {"pairs_written": len(KEPT)})
    return sink


@pytest.fixture
def mem():
    prefix = f"memory://v-{uuid.uuid4().hex[:8]}/run"
    yield prefix
    storage.remove(prefix)


@pytest.fixture
def run(mem):
    publish_run(mem)
    return mem


def listed(prefix: str, i: int = 0) -> dict:
    return read_manifest(storage.join(prefix, "manifest.json"))["shardlist"][i]


def rewrite_manifest(prefix: str, edit) -> None:
    manifest = read_manifest(storage.join(prefix, "manifest.json"))
    edit(manifest)
    write_json_atomic(storage.join(prefix, "manifest.json"), manifest)


def rewrite_table(prefix: str, keep) -> None:
    path = storage.join(prefix, "samples.parquet")
    rows = [r for r in read_table(path) if keep(r)]
    write_table(path, [{"key": r["key"], "kind": r["kind"], "fate": r["fate"], "reason": r["reason"]} for r in rows])


# -- a run on memory:// ---------------------------------------------------------------------------------

def test_a_whole_run_on_object_storage_verifies(run):
    manifest = read_manifest(storage.join(run, "manifest.json"))
    assert manifest["sample_format"] == 2 and all(e["url"].startswith("shards/") for e in manifest["shardlist"])
    assert verify(run) == ([], {"shards": 2, "samples": len(KEPT), "table_rows": N})
    assert verify(run + "/") == verify(run)
    assert sorted(r["key"] for r in read_table(storage.join(run, "samples.parquet")) if r["fate"] == "kept") == KEPT
    assert not_a_run(run) is None
    assert not_a_run(f"memory://v-{uuid.uuid4().hex[:8]}/nothing") == "no such folder"


def put_object(prefix: str, rel: str, data: bytes) -> None:
    storage.put_bytes(storage.join(prefix, rel), data)


def shard_bytes(prefix: str, i: int = 0) -> bytes:
    return storage.read_bytes(storage.join(prefix, listed(prefix, i)["url"]))


@pytest.mark.parametrize("damage, expected", [
    (lambda p: storage.remove(storage.join(p, listed(p, 1)["url"])), "{1}: missing"),
    (lambda p: put_object(p, listed(p, 1)["url"], shard_bytes(p, 1)[:3000]), "{1}: size 3000 != manifest"),
    (lambda p: put_object(p, listed(p, 1)["url"], shard_bytes(p, 1)[:3000]), "{1}: unreadable"),
    (lambda p: put_object(p, listed(p)["url"], shard_bytes(p).replace(b"pair-000", b"pair-009")),
     "{0}: md5 differs from the manifest"),
    (lambda p: put_object(p, shard_object("pairs-000000", "deadbeef0000"), shard_bytes(p)),
     "pairs-000000.deadbeef0000.tar: shard not in the manifest"),
    (lambda p: rewrite_manifest(p, lambda m: m["shardlist"][0].update(nsamples=2)), "{0}: 3 samples, manifest says 2"),
    (lambda p: rewrite_table(p, lambda r: r["key"] != "pair-003"), "key 'pair-003' is in a shard but not kept"),
    (lambda p: put_object(p, "samples.parquet", b"nope"), "samples.parquet unreadable"),
    (lambda p: storage.remove(storage.join(p, "manifest.json")), "manifest unreadable"),
])
def test_each_damage_to_the_objects_is_reported(run, damage, expected):
    names = [e["url"] for e in read_manifest(storage.join(run, "manifest.json"))["shardlist"]]
    damage(run)
    problems, _ = verify(run)
    assert any(expected.format(*names) in p for p in problems), problems


def test_a_sample_lacking_members_or_with_an_unsafe_name_is_reported(run):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in {**{f"odd.{k}": v for k, v in members(9).items() if k != "mask.png"},
                           "../../escape.meta.json": b"{}"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rel = shard_object("pairs-000002", "handmade0000")
    put_object(run, rel, buf.getvalue())
    entry = {"url": rel, "nsamples": 2, "filesize": len(buf.getvalue()), "md5sum": storage.md5(storage.join(run, rel))}
    rewrite_manifest(run, lambda m: m["shardlist"].append(entry))
    problems, _ = verify(run)
    assert f"{storage.name(rel)}: sample 'odd' lacks mask.png" in problems, problems
    assert any("unsafe member '../../escape.meta.json'" in p for p in problems), problems
    assert not any("md5" in p or "size" in p or "not in the manifest" in p for p in problems), problems


def test_manifest_table_json_and_previews_are_single_objects_on_a_url(mem):
    write_manifest(storage.join(mem, "manifest.json"), [], {"seed": 1}, {"pairs_written": 0})
    manifest = read_manifest(storage.join(mem, "manifest.json"))
    assert manifest["name"] == "run" and manifest["config"] == {"seed": 1}
    write_json_atomic(storage.join(mem, "state", "timeline.json"), {"bin_s": 1.0})
    assert json.loads(storage.read_text(storage.join(mem, "state", "timeline.json"))) == {"bin_s": 1.0}
    entries = [{"key": "a", "kind": "pair", "fate": "kept", "meta": {"scores": {"lmd": 1.5}}, "shard": "shards/x.tar"}]
    write_table(storage.join(mem, "samples.parquet"), entries)
    assert read_table(storage.join(mem, "samples.parquet"))[0]["score_lmd"] == 1.5
    assert write_preview(mem, "a", b"\xff\xd8jpeg") == preview_location(mem, "a") == f"{mem}/previews/a.jpg"
    assert storage.read_bytes(f"{mem}/previews/a.jpg") == b"\xff\xd8jpeg"
    assert sorted(Store(mem).list("")) == ["manifest.json", "previews/a.jpg", "samples.parquet", "state/timeline.json"]


def test_the_local_table_and_preview_are_the_bytes_written_to_a_url(mem, tmp_path):
    entries = publish_run(mem).entries()
    write_table(tmp_path / "samples.parquet", entries)
    assert read_table(tmp_path / "samples.parquet") == read_table(storage.join(mem, "samples.parquet"))
    write_preview(tmp_path, "k", b"jpeg bytes")
    assert (tmp_path / "previews" / "k.jpg").read_bytes() == b"jpeg bytes"
    assert preview_location(tmp_path, "k") == str(tmp_path / "previews" / "k.jpg")


# -- on the local S3 server -----------------------------------------------------------------------------

def test_a_run_on_s3_verifies_and_its_damage_is_reported(s3_bucket):
    import s3fs

    prefix = f"{s3_bucket}/run"
    publish_run(prefix)
    assert verify(prefix) == ([], {"shards": 2, "samples": len(KEPT), "table_rows": N})
    # an orphan PUT by another client (a killed worker's attempt): this process's s3fs listed
    # shards/ just now and caches that listing; verify must look again
    other = s3fs.S3FileSystem(skip_instance_cache=True)
    other.pipe_file(f"{prefix}/{shard_object('pairs-000001', 'orphan000000')}".removeprefix("s3://"), b"x" * 10)
    assert verify(prefix)[0] == ["pairs-000001.orphan000000.tar: shard not in the manifest"]
    entry = listed(prefix)
    put_object(prefix, entry["url"], bytes(entry["filesize"]))  # same size, other bytes
    problems, _ = verify(prefix)
    assert f"{entry['url']}: md5 differs from the manifest" in problems, problems


# -- a finished local run copied to object storage: verify and report ------------------------------------

@pytest.mark.slow
def test_a_finished_run_on_a_url_verifies_and_reports_as_on_disk(finished_run, mem, tmp_path):
    from factory.report import REPORT, build_report
    from factory.report.data import load_run
    from tests.test_report import assert_the_page_shows_the_run

    storage.upload_tree(finished_run, mem)
    assert verify(mem) == verify(finished_run) and verify(mem)[1]["samples"] > 0
    # the report: written beside the run, as one object; the page passes the report tests' checks
    dest = build_report(mem)
    assert dest == f"{mem}/{REPORT}"
    run = load_run(mem)
    assert run.timeline and run.summary["pairs_written"] == verify(mem)[1]["samples"]
    assert_the_page_shows_the_run(storage.read_text(dest), run, read_table(storage.join(mem, "samples.parquet")))
    # or to a local file (a browser opens that)
    assert build_report(mem, tmp_path / "r.html") == tmp_path / "r.html"
    assert_the_page_shows_the_run((tmp_path / "r.html").read_text(), run, read_table(finished_run / "samples.parquet"))
    # damage on the URL is reported as the same damage on disk
    shard = listed(mem)["url"]
    storage.remove(storage.join(mem, shard))
    assert f"{shard}: missing" in verify(mem)[0]
