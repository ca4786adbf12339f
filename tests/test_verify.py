"""`factory verify` passes a whole output and catches each way an output can be damaged."""

import io
import json
import shutil
import tarfile

import pytest

from factory.cli import main
from factory.payload import PairMedia
from factory.records import Record
from manifests.format import write_manifest
from manifests.table import write_table
from manifests.verify import verify
from manifests.writer import ShardSink


def sample(key):
    return Record(key, "pair", media=PairMedia(files={"a.txt": key.encode(), "meta.json": b"{}"}), meta={})


@pytest.fixture
def output(tmp_path):
    """A small finished output: 5 kept samples in 3 shards, 1 rejection, manifest and table."""
    out = tmp_path / "out"
    sink = ShardSink(out, maxcount=2, maxsize=10**9)
    for i in range(5):
        sink.write(sample(f"s{i}"))
    sink.reject(Record("r0", "clip", meta={}).reject("no_speech", "ingest"))
    sink.close()
    # toy samples, not pairs: format 1 asks for no particular members
    write_manifest(out / "manifest.json", list(sink.shards.values()), {}, {"pairs_written": 5}, sample_format=1)
    write_table(out / "samples.parquet", list(sink.ledger.entries.values()))
    return out


def shard(out, i=0):
    return out / "shards" / f"pairs-{i:06d}.tar"


def test_a_whole_output_verifies(output, capsys):
    assert verify(output) == ([], {"shards": 3, "samples": 5, "table_rows": 6})
    assert main(["verify", str(output)]) == 0 and "OK" in capsys.readouterr().out


def rewrite_manifest(out, edit):
    m = json.loads((out / "manifest.json").read_text())
    edit(m)
    (out / "manifest.json").write_text(json.dumps(m))


def add_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("damage, expected", [
    (lambda o: shard(o, 1).unlink(), "missing"),
    (lambda o: shard(o, 1).write_bytes(shard(o, 1).read_bytes()[:700]), "size"),
    (lambda o: shard(o).write_bytes(shard(o).read_bytes().replace(b"s0", b"s9")), "md5"),
    (lambda o: rewrite_manifest(o, lambda m: m["shardlist"][0].update(nsamples=3)), "manifest says 3"),
    (lambda o: shutil.copy(shard(o), o / "shards" / "pairs-000009.tar"), "not in the manifest"),
    (lambda o: (o / "shards" / "pairs-000010.tar.partial").write_bytes(b"x"), "half-written"),
    (lambda o: (o / "samples.parquet").write_bytes(b"nope"), "samples.parquet unreadable"),
    (lambda o: (o / "manifest.json").unlink(), "manifest unreadable"),
])
def test_each_damage_is_caught(output, capsys, damage, expected):
    damage(output)
    problems, _ = verify(output)
    assert any(expected in p for p in problems), problems
    assert main(["verify", str(output)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_duplicate_keys_and_unsafe_names_are_caught(output):
    dup = output / "shards" / "pairs-000003.tar"
    add_tar(dup, {"s0.a.txt": b"again", "../../escape.a.txt": b"x"})
    from manifests.format import shard_entry

    rewrite_manifest(output, lambda m: m["shardlist"].append(shard_entry(dup, 2, output)))
    problems, _ = verify(output)
    assert any("'s0' appears 2 times" in p for p in problems), problems
    assert any("unsafe member" in p for p in problems), problems


def test_table_and_shards_must_agree(output):
    from manifests.table import read_table

    rows = [r for r in read_table(output / "samples.parquet") if r["key"] != "s3"]
    write_table(output / "samples.parquet", [{"key": r["key"], "fate": r["fate"], "reason": r["reason"],
                                              "kind": r["kind"]} for r in rows])
    problems, _ = verify(output)
    assert any("'s3' is in a shard but not kept" in p for p in problems), problems
