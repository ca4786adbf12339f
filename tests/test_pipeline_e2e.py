"""`factory run` end to end on real talking-face video, under both executors."""

import json
import shutil

import numpy as np
import pytest
import webdataset as wds

from manifests.reader import iter_pairs
from manifests.table import read_table
from tests.cli import FINISHED_RUN, LOCAL, SHARDS_OF_3, SMALL, executor, factory_command, run_args, run_factory


def check_output(out):
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["__kind__"] == "wids-shard-index-v1" and manifest["wids_version"] == 1
    table = {r["key"]: r for r in read_table(out / "samples.parquet")}
    kept = {k for k, r in table.items() if r["fate"] == "kept"}
    assert table and all(r["fate"] == "kept" or r["reason"] for r in table.values())
    keys = []
    for entry in manifest["shardlist"]:
        path = out / entry["url"]
        assert path.stat().st_size == entry["filesize"]
        n = sum(1 for _ in wds.WebDataset(str(path), shardshuffle=False, empty_check=False))
        assert n == entry["nsamples"]
    for pair in iter_pairs(out / "manifest.json"):
        keys.append(pair["key"])
        assert "." not in pair["key"]
        assert pair["syn"].shape == pair["real"].shape and pair["syn"].shape[1:] == (256, 256, 3)
        assert pair["real_audio"].shape == pair["alt_audio"].shape
        assert pair["syn_landmarks"].shape == pair["real_landmarks"].shape
        meta = pair["meta"]
        assert meta["generator"] == "transplant" and meta["scores"]["lmd"] >= 1.0
        assert len(meta["source_sha256"]) == 64 and meta["config_hash"] and meta["alt_key"] != pair["key"]
        # outside the (dilated) mask the synthetic frames are the real ones, up to video coding
        from factory.faces.masks import dilate

        outside = dilate(pair["mask"] > 0, 14) == 0
        diff = np.abs(pair["syn"].astype(int) - pair["real"].astype(int))
        assert diff[:, outside].mean() < 2.0 and diff[:, ~outside].mean() > diff[:, outside].mean()
    assert len(keys) == len(set(keys)) and set(keys) == kept
    assert manifest["stats"]["pairs_written"] == len(kept)
    return manifest, table


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "ray"])
def test_factory_run_writes_pairs(tmp_path, talking_videos, kind, request):
    if kind == "local":  # the session's shared run has exactly these settings
        out = request.getfixturevalue("finished_run")
    else:
        out = tmp_path / "out"
        assert run_factory(out, *SMALL, SHARDS_OF_3, executor(kind), videos=talking_videos) == 0
    manifest, table = check_output(out)
    assert manifest["stats"]["pairs_written"] >= 4
    assert manifest["stats"]["files_skipped_by_extension"] == 1
    broken = [r for r in table.values() if r["kind"] == "video"]
    assert [r["reason"] for r in broken] == ["unreadable_container"]
    assert len(list((out / "previews").glob("*.jpg"))) == manifest["stats"]["pairs_written"]
    assert (out / "config.yaml").exists() and manifest["config"]["executor"]["kind"] == kind


@pytest.mark.slow
def test_rerun_adds_nothing_and_loses_nothing(tmp_path, talking_videos, finished_run):
    out = shutil.copytree(finished_run, tmp_path / "out")  # the rerun writes into it
    first = sorted((out / "shards").iterdir())
    code2 = run_factory(out, *FINISHED_RUN, videos=talking_videos)
    assert code2 == 0
    assert sorted((out / "shards").iterdir()) == first
    manifest, _ = check_output(out)
    assert manifest["stats"]["pairs_written_this_run"] == 0


def test_bad_config_and_no_input_exit_non_zero(tmp_path):
    assert run_factory(None, "ingest.nope=1") == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_factory(tmp_path / "o", LOCAL, videos=empty) == 3


def kept_keys(out):
    return sorted(sample["__key__"] for sample in iter_pairs(out / "manifest.json", decode=False))


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path, talking_videos):
    import os
    import signal
    import subprocess
    import time

    settings = [*SMALL, LOCAL, "write.shard_maxcount=1"]  # one pair a shard: many commit points
    assert run_factory(tmp_path / "ref", *settings, videos=talking_videos) == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen(factory_command(*run_args(out, *settings, videos=talking_videos), "-q"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger = out / "state" / "ledger.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if ledger.exists() and ledger.read_text().count('"kept"') >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert run_factory(out, *settings, videos=talking_videos) == 0
    assert not list(out.rglob("*.partial"))
    check_output(out)
    assert kept_keys(out) == kept_keys(tmp_path / "ref")
