"""A kill can tear the last line of the ledger or the shard log; the next run must cut the torn
tail off before appending, or its first new line is glued onto it and lost (found by the soak: a
shard whose log line was lost escaped the md5 check, so a later bit flip in it was adopted as good
and `verify` passed)."""

import io
import json
import tarfile

from manifests.ledger import Ledger
from manifests.writer import ShardSink, read_shard_log

TORN = '{"url": "shards/pa'


def write_tar(path, key):
    with tarfile.open(path, "w") as tar:
        data = json.dumps({"n": key}).encode()
        info = tarfile.TarInfo(f"{key}.meta.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_a_torn_shard_log_tail_is_cut_before_the_next_commit(tmp_path):
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    write_tar(out / "shards" / "pairs-000000.tar", "a")
    ShardSink(out, 3, 10**9).close()  # adopts it: one whole line in the log
    log = out / "state" / "shards.jsonl"
    with open(log, "a") as f:
        f.write(TORN)  # a kill in the middle of the next line
    write_tar(out / "shards" / "pairs-000001.tar", "b")  # renamed just before that kill
    ShardSink(out, 3, 10**9).close()  # adopts it, appending its line
    assert list(read_shard_log(log)) == ["shards/pairs-000000.tar", "shards/pairs-000001.tar"]
    assert all(json.loads(line) for line in log.read_text().splitlines())  # no torn line left in it

    # so the md5 check now covers the second shard too: a flipped bit is found and the shard dropped
    data = bytearray((out / "shards" / "pairs-000001.tar").read_bytes())
    data[10] ^= 1
    (out / "shards" / "pairs-000001.tar").write_bytes(bytes(data))
    sink = ShardSink(out, 3, 10**9)
    sink.close()
    assert sink.repaired == ["shards/pairs-000001.tar"]


def test_a_ledger_line_missing_only_its_newline_is_kept_and_ended(tmp_path):
    path = tmp_path / "ledger.jsonl"
    whole = json.dumps({"key": "a", "kind": "pair", "fate": "kept"})
    path.write_text(whole + "\n" + json.dumps({"key": "b", "kind": "pair", "fate": "kept"}))  # cut before "\n"
    ledger = Ledger(path)
    assert list(ledger.entries) == ["a", "b"]
    ledger.append([{"key": "c", "kind": "pair", "fate": "kept"}])
    ledger.close()
    assert list(Ledger(path).entries) == ["a", "b", "c"]


def test_a_torn_ledger_tail_is_cut(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text(json.dumps({"key": "a", "kind": "pair", "fate": "kept"}) + '\n{"key": "b", "ki')
    ledger = Ledger(path)
    ledger.append([{"key": "c", "kind": "pair", "fate": "kept"}])
    ledger.close()
    assert list(Ledger(path).entries) == ["a", "c"]
