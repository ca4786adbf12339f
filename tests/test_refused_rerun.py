"""A rerun refused for other settings leaves the output exactly as it was (no new clip store)."""

import shutil

from factory.files import file_digest
from tests.cli import FINISHED_RUN, run_factory


def files(out):
    return {p.relative_to(out).as_posix(): file_digest(p, "md5") for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "run.lock"}


def test_a_refused_rerun_changes_nothing_in_out(finished_run, talking_videos, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    before = files(out)
    assert run_factory(out, *FINISHED_RUN, "ingest.clip_stride=50", videos=talking_videos) == 2
    assert "ingest.clip_stride: 25 -> 50" in capsys.readouterr().err
    assert files(out) == before
    assert len(list((out / "clips").iterdir())) == 1  # the other settings' store was not made
