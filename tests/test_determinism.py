"""Same input, config and seed under the in-process executor: byte-identical shards."""

import pytest

from factory.cli import main


@pytest.mark.slow
def test_two_runs_write_byte_identical_shards(tmp_path, talking_videos):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main(["run", "configs/demo.yaml", "input.demo=false", f"input.paths=[{talking_videos}]",
                     f"out={out}", "ingest.clip_frames=25", "ingest.clip_stride=25", "executor.kind=local",
                     "executor.progress=false", "write.shard_maxcount=3"]) == 0
    shards = [sorted((out / "shards").glob("*.tar")) for out in outs]
    assert [p.name for p in shards[0]] == [p.name for p in shards[1]] and shards[0]
    for a, b in zip(*shards):
        assert a.read_bytes() == b.read_bytes(), a.name
