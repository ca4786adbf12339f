"""The commands and keys that still need local files (eval, model weights) refuse a URL: exit 2,
one line saying what works on URLs, and nothing made (no local folder named `memory:` or `s3:`).
Runs, clip stores, verify, report (tests/test_object_run.py), refilter
(tests/test_refilter_urls.py) and train-syncnet (tests/test_syncnet_urls.py) take URLs."""

from __future__ import annotations

import pytest

from factory.cli import main

CONFIGS = "configs"


@pytest.mark.parametrize("args", [
    ["run", f"{CONFIGS}/demo.yaml", "out=runs/x", "generate.weights=s3://bucket/editor"],
    ["eval", "eval.manifest=s3://bucket/run/manifest.json"],
])
def test_a_url_where_the_command_needs_local_files_is_refused(args, tmp_path, monkeypatch, capsys, request):
    args = [str(request.config.rootpath / a) if a.startswith(CONFIGS) else a for a in args]
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "object storage is not supported yet" in err[-1] and "URLs work for runs, clip stores" in err[-1]
    assert "://" in err[-1].split("(", 1)[1]  # it names the URL it refused
    assert list(tmp_path.iterdir()) == []  # nothing made here: no `memory:` / `s3:` folder
