"""Shards are atomic and a reopened sink resumes exactly once."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import webdataset as wds

from factory.payload import PairMedia
from factory.records import Record
from manifests.ledger import Ledger
from manifests.writer import ShardSink


def sample(key):
    return Record(key, "pair", media=PairMedia(files={"a.txt": key.encode(), "meta.json": json.dumps({"key": key}).encode()}),
                  meta={"scores": {"lmd": 2.0}})


def read_keys(out):
    urls = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    return [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)]


def test_shards_commit_atomically_and_are_readable(tmp_path):
    sink = ShardSink(tmp_path, maxcount=2, maxsize=10**9)
    for i in range(5):
        sink.write(sample(f"s{i}"))
    # the open shard is still under its .partial name: never a half-written tar under a final name
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "pairs-000000.tar", "pairs-000001.tar", "pairs-000002.tar.partial"]
    sink.close()
    assert read_keys(tmp_path) == [f"s{i}" for i in range(5)]
    assert [s["nsamples"] for s in sorted(sink.shards.values(), key=lambda s: s["url"])] == [2, 2, 1]
    with tarfile.open(tmp_path / "shards" / "pairs-000000.tar") as tar:
        assert {m.mtime for m in tar.getmembers()} == {0}


KILLED_WRITER = """
import os, sys
sys.path.insert(0, {root!r})
from tests.test_writer import sample
from factory.records import Record
from manifests.writer import ShardSink
sink = ShardSink({out!r}, maxcount=2, maxsize=10**9)
for i in range(3):
    sink.write(sample(f"s{{i}}"))
sink.reject(Record("r0", "clip", meta={{}}).reject("no_speech", "ingest"))
os._exit(9)  # killed: s2 sits in a .partial shard that must be discarded and redone
"""


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path):
    code = KILLED_WRITER.format(root=str(Path(__file__).parent.parent), out=str(tmp_path))
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert (tmp_path / "shards" / "pairs-000001.tar.partial").exists()
    again = ShardSink(tmp_path, maxcount=2, maxsize=10**9)
    assert not list((tmp_path / "shards").glob("*.partial"))
    done = [k for k in ["s0", "s1", "s2", "r0"] if again.done(k)]
    assert done == ["s0", "s1", "r0"]
    for i in range(6):
        if not again.done(f"s{i}"):
            again.write(sample(f"s{i}"))
    again.close()
    assert sorted(read_keys(tmp_path)) == [f"s{i}" for i in range(6)]


def test_tar_renamed_but_not_recorded_is_adopted(tmp_path):
    sink = ShardSink(tmp_path, maxcount=2, maxsize=10**9)
    for i in range(2):
        sink.write(sample(f"s{i}"))
    sink.close()
    # simulate a kill between the rename and the ledger append
    (tmp_path / "state" / "ledger.jsonl").write_text("")
    (tmp_path / "state" / "shards.jsonl").write_text("")
    again = ShardSink(tmp_path, maxcount=2, maxsize=10**9)
    assert again.done("s0") and again.done("s1")
    again.write(sample("s0"))  # already in a final tar: ignored
    again.close()
    assert sorted(read_keys(tmp_path)) == ["s0", "s1"]


def test_ledger_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path)
    ledger.append([{"key": "a", "fate": "rejected"}])
    ledger.close()
    with open(path, "a") as f:
        f.write('{"key": "b", "fa')
    again = Ledger(path)
    assert "a" in again and "b" not in again
    again.append([{"key": "c", "fate": "kept"}])
    again.close()
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a", "c"]
