"""Same input, config and seed under the in-process executor: byte-identical shards."""

import pytest

from tests.cli import FINISHED_RUN, run_factory


@pytest.mark.slow
def test_two_runs_write_byte_identical_shards(tmp_path, talking_videos, finished_run):
    again = tmp_path / "again"  # a second run with the shared run's exact settings
    assert run_factory(again, *FINISHED_RUN, videos=talking_videos) == 0
    outs = [finished_run, again]
    shards = [sorted((out / "shards").glob("*.tar")) for out in outs]
    assert [p.name for p in shards[0]] == [p.name for p in shards[1]] and shards[0]
    for a, b in zip(*shards):
        assert a.read_bytes() == b.read_bytes(), a.name
