"""Every way of misusing the command line that issue 11 found, in one table: each case's exit code
and a fragment of the one message it must print. All of them fail before any video is decoded,
so the whole table runs in seconds (in this process, through factory.cli.main)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from factory.cli import main
from tests.cli import CONFIG, LOCAL, QUIET, inputs
from tests.test_out_lock import start_holder


@dataclass
class Case:
    name: str  # what a user did
    args: Callable[[Path], list[str]]  # the command line, given a fresh folder to work in
    code: int
    says: Callable[[Path], str]  # a fragment of what stderr must say
    before: Callable[[Path], object] = lambda tmp: None  # set-up (its result is kept alive)


def run(tmp: Path, *overrides: str, out: str | None = None, videos: Path | None = None) -> list[str]:
    return ["run", CONFIG, *(inputs(videos if videos is not None else folder(tmp, "empty"))),
            f"out={out if out is not None else tmp / 'out'}", LOCAL, QUIET, *overrides]


def folder(tmp: Path, name: str, files: dict[str, str] | None = None) -> Path:
    path = tmp / name
    path.mkdir(exist_ok=True)
    for file, text in (files or {}).items():
        (path / file).write_text(text)
    return path


def earlier_run(tmp: Path) -> None:
    """A first run into OUT with the default clip stride (it finds no input: exit 3, but OUT now
    belongs to its settings)."""
    assert main(run(tmp)) == 3


CASES = [
    # 1. a rerun with other settings into the same out
    Case("rerun with another clip stride", lambda t: run(t, "ingest.clip_stride=50"), 2,
         lambda t: "holds a run made with other settings", before=earlier_run),
    Case("rerun with another clip stride names the key", lambda t: run(t, "ingest.clip_stride=50"), 2,
         lambda t: "ingest.clip_stride: 77 -> 50", before=earlier_run),
    # 2. values out of range
    Case("negative fps (hung a worker)", lambda t: run(t, "ingest.fps=-25"), 2,
         lambda t: "config key 'ingest.fps' must be an integer >= 1, got -25"),
    Case("zero clip frames (exited 0)", lambda t: run(t, "ingest.clip_frames=0"), 2,
         lambda t: "'ingest.clip_frames' must be an integer >= 1"),
    Case("negative threshold", lambda t: run(t, "filters.identity.min_csim=-2"), 2,
         lambda t: "'filters.identity.min_csim' must be null (the backend's default) or a number in [-1, 1], got -2.0"),
    Case("zero shard size", lambda t: run(t, "write.shard_maxcount=0"), 2,
         lambda t: "'write.shard_maxcount' must be an integer >= 1"),
    Case("a misspelt key", lambda t: run(t, "ingest.fsp=25"), 2, lambda t: "unknown config key 'ingest.fsp'"),
    Case("a word that is not key=value", lambda t: run(t, "fast"), 2, lambda t: "override 'fast' is not of the form"),
    Case("a config file that is not there", lambda t: ["run", str(t / "nope.yaml")], 2,
         lambda t: "config file not found"),
    # 6. an unknown generator (was found only in the workers)
    Case("unknown generator", lambda t: run(t, "generate.generator=nope"), 2,
         lambda t: "unknown generator 'nope' (config key generate.generator"),
    # 8. messages: ' #' in a path, YAML that does not parse
    Case("' #' in an input path is part of it", lambda t: run(t, videos=folder(t, "my #1 videos")), 3,
         lambda t: f"{t / 'my #1 videos'} is an empty folder"),
    Case("' #' in out is part of it", lambda t: run(t, out="/sys/runs #2"), 2,
         lambda t: "out=/sys/runs #2 is not a writable folder"),
    Case("a list left open", lambda t: run(t, f"input.paths=[{t}, b"), 2,
         lambda t: f"override input.paths=[{t}, b: not a valid value"),
    # 8. an out that cannot be written (/sys refuses new folders to everyone, root included, so this
    #    runs under any user; tests/test_out_lock.py has a chmod 555 folder for non-root users)
    Case("read-only out", lambda t: run(t, out="/sys/factory-out"), 2,
         lambda t: "out=/sys/factory-out is not a writable folder"),
    Case("out below a file", lambda t: run(t, out=f"{t / 'a_file'}/run"), 2,
         lambda t: "is not a writable folder", before=lambda t: (t / "a_file").write_text("")),
    # 8. no input: each kind told apart (all said "no readable input")
    Case("missing input path", lambda t: run(t, videos=t / "nowhere"), 3, lambda t: f"{t / 'nowhere'} does not exist"),
    Case("empty input folder", lambda t: run(t), 3, lambda t: f"{t / 'empty'} is an empty folder"),
    Case("folder of non-videos", lambda t: run(t, videos=folder(t, "docs", {"notes.txt": "x", "a.pdf": "y"})), 3,
         lambda t: f"{t / 'docs'} holds 2 file(s), none ending in .mp4"),
    Case("no input paths at all", lambda t: ["run", CONFIG, "input.demo=false", f"out={t / 'out'}", LOCAL, QUIET], 3,
         lambda t: "input.paths is empty"),
    # 4. a second process on the same out
    Case("concurrent run on one out", lambda t: run(t), 2,
         lambda t: "is in use by another factory process (PID ", before=lambda t: start_holder(t / "out")),
    # refilter and verify on something that is not a finished run
    Case("refilter before the run finished", lambda t: ["refilter", str(t), "filters.identity.min_csim=0.9"], 2,
         lambda t: "has no manifest.json: finish `factory run` before refiltering"),
    Case("refilter of a non-filter key", lambda t: ["refilter", str(t), "ingest.fps=30"], 2,
         lambda t: "refilter changes only filters.* thresholds", before=lambda t: (t / "manifest.json").write_text("{}")),
    Case("verify of a folder with no run", lambda t: ["verify", str(t)], 3, lambda t: "no manifest.json in it"),
    Case("report of a folder with no run", lambda t: ["report", str(t)], 3, lambda t: "has no manifest.json"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_misuse_exits_with_its_code_and_one_clear_message(case, tmp_path, capsys):
    held = case.before(tmp_path)
    try:
        capsys.readouterr()
        code = main(case.args(tmp_path))
        err = capsys.readouterr().err
    finally:
        if hasattr(held, "kill"):
            held.kill()
            held.wait()
    assert code == case.code, err[-2000:]
    assert case.says(tmp_path) in err, err[-2000:]
    assert "Traceback" not in err
