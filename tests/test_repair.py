"""A rerun over a damaged output repairs it instead of reporting success over it."""

import json
import shutil

import pytest

from factory.files import file_digest
from manifests.format import read_manifest
from manifests.verify import verify
from tests.cli import FINISHED_RUN, run_factory


def shard_digests(out):
    return {s["url"]: s["md5sum"] for s in read_manifest(out / "manifest.json")["shardlist"]}


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a member's content: the tar still reads
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_a_bit, lambda p: p.unlink()], ids=["truncated", "bit_flip", "deleted"])
def test_a_rerun_remakes_a_damaged_shard(finished_run, talking_videos, tmp_path, damage, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    before = shard_digests(out)
    url = sorted(before)[0]
    damage(out / url)
    assert verify(out)[0]  # the damage is real
    assert run_factory(out, *FINISHED_RUN, videos=talking_videos) == 0
    assert f"repaired: {url}" in capsys.readouterr().out
    assert verify(out)[0] == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards_repaired"] == [url] and summary["verify_problems"] == []
    # the same samples as the undamaged run: every key back exactly once
    keys = lambda o: sorted(e["key"] for e in map(json.loads, (o / "state" / "ledger.jsonl").read_text().splitlines()))
    assert keys(out) == keys(finished_run)
    assert summary["pairs_written"] == json.loads((finished_run / "summary.json").read_text())["pairs_written"]
    assert all(file_digest(out / u, "md5") for u in shard_digests(out))


def test_a_run_whose_output_fails_verify_exits_1(finished_run, talking_videos, tmp_path, capsys):
    """What the run does not repair (a foreign file among its shards) fails it at the end, loudly."""
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    (out / "shards" / "backup.tar.gz").write_bytes(b"not ours")
    assert run_factory(out, *FINISHED_RUN, videos=talking_videos) == 1
    err = capsys.readouterr().err
    assert "backup.tar.gz: shard not in the manifest" in err and "does not match its manifest" in err
    assert json.loads((out / "summary.json").read_text())["verify_problems"]


def test_the_training_reader_refuses_a_bit_flipped_shard(finished_run, tmp_path):
    from manifests.reader import DamagedShard, iter_pairs

    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    url = sorted(shard_digests(out))[0]
    flip_a_bit(out / url)
    with pytest.raises(DamagedShard, match=url.split("/")[-1]):
        next(iter_pairs(out / "manifest.json"))
    assert next(iter_pairs(out / "manifest.json", check=False, decode=False))  # on request, read as is
