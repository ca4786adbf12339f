"""Until the factory writes runs to object storage (issue 15's write side), every command that
writes a run or reads inputs, clip stores or outputs refuses a URL: exit 2, one line saying what
works on URLs today, and nothing made (no local folder named `memory:` or `s3:`)."""

from __future__ import annotations

import pytest

from factory.cli import main

CONFIGS = "configs"


@pytest.mark.parametrize("args", [
    ["run", f"{CONFIGS}/demo.yaml", "out=memory://bucket/run"],
    ["run", f"{CONFIGS}/demo.yaml", "out=runs/x", "clip_store=s3://bucket/clips"],
    ["ingest", f"{CONFIGS}/demo.yaml", "input.paths=[gs://bucket/videos]"],
    ["pairs", f"{CONFIGS}/demo.yaml", "clip_stores=[runs/a,s3://bucket/clips]"],
    ["refilter", "s3://bucket/run"],
    ["verify", "memory://bucket/run"],
    ["report", "s3://bucket/run"],
    ["eval", "eval.manifest=s3://bucket/run/manifest.json"],
    ["train-syncnet", f"{CONFIGS}/syncnet_cpu.yaml", "out=s3://bucket/syncnet"],
    ["train-generator", f"{CONFIGS}/generator_editor_cpu.yaml", "clip_stores=[s3://bucket/clips]"],
])
def test_a_url_where_the_command_needs_local_files_is_refused(args, tmp_path, monkeypatch, capsys, request):
    args = [str(request.config.rootpath / a) if a.startswith(CONFIGS) else a for a in args]
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "object storage is not supported yet" in err[-1] and "loop.out checkpoints to them" in err[-1]
    assert "://" in err[-1].split("(", 1)[1]  # it names the URL it refused
    assert list(tmp_path.iterdir()) == []  # nothing made here: no `memory:` / `s3:` folder
