"""`factory refilter` on a run whose `out` is a URL (issue 15): a real run committed on `memory://`
by the object-store protocol, refiltered looser and tighter, keeps the same keys with the same
fates as the local refilter of the same run on disk; the run's own shard objects are untouched,
only the view the manifest names stays, `verify` is clean after each; a refilter stopped at each
of its fault points (raised in this process on memory://, a SIGKILL of the process on the local S3
server) leaves a manifest that verifies, and a rerun finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from factory import faults, storage
from factory.cli import main
from manifests.format import read_manifest
from manifests.object_commit import read_records, Store
from manifests.reader import iter_pairs
from manifests.table import read_table
from manifests.verify import verify
from tests.cli import CONFIG, FINISHED_RUN, factory_command, run_factory

URL = "memory://refilter-tests/run"
LOOSE = "filters.mouth_distance.min_lmd=0"
REFILTER_FAULT_POINTS = ["refilter_view", "refilter_manifest", "refilter_committed"]


@pytest.fixture(scope="module")
def run_threshold(finished_run) -> str:
    """An LMD threshold half the session's finished run passes: a run with it has kept shards and
    rejected ones (pairs set aside with their files), so a refilter can loosen and tighten."""
    return f"filters.mouth_distance.min_lmd={cut_between(finished_run, 0.5)}"


@pytest.fixture(scope="module")
def url_run(talking_videos, run_threshold):
    """FINISHED_RUN with `run_threshold`, its out on memory://: committed by the object protocol."""
    config = str(Path(CONFIG).resolve())
    assert run_factory(URL, *FINISHED_RUN, run_threshold, videos=talking_videos, config=config) == 0
    yield URL
    storage.remove(URL)


@pytest.fixture(scope="module")
def local_run(talking_videos, run_threshold, tmp_path_factory):
    """The same run on local disk, to refilter beside the URL run."""
    out = tmp_path_factory.mktemp("refilter_urls") / "out"
    assert run_factory(out, *FINISHED_RUN, run_threshold, videos=talking_videos) == 0
    return out


def fates(out) -> dict[str, tuple]:
    """Every table row (the table the manifest names): its fate, reason and which shards hold it."""
    table = read_manifest(storage.join(str(out), "manifest.json"))["table"]
    return {r["key"]: (r["fate"], r["reason"], (r["shard"] or "").split("/")[0] or None)
            for r in read_table(storage.join(str(out), table))}


def kept_keys(out) -> list[str]:
    return sorted(p["__key__"] for p in iter_pairs(storage.join(str(out), "manifest.json"), decode=False))


def objects(url: str, under: str) -> dict[str, str]:
    """The objects under `url/under`, relative to `url`, with their md5."""
    storage.forget_listings(url)
    return {f[len(url) + 1:]: storage.md5(f) for f in storage.find(storage.join(url, under))}


def cut_between(out, share: float) -> float:
    """An LMD threshold between two recorded pair scores, keeping about `1 - share` of them."""
    lmds = sorted(r["score_lmd"] for r in read_table(storage.join(str(out), "samples.parquet"))
                  if r["kind"] == "pair" and r["score_lmd"] is not None)
    i = max(1, min(len(lmds) - 1, int(len(lmds) * share)))
    return (lmds[i - 1] + lmds[i]) / 2


def refilter_both(url: str, local: Path, *changes: str) -> None:
    """The same refilter on the URL run and on the local one; both verify."""
    assert main(["refilter", url, *changes]) == 0
    assert main(["refilter", str(local), *changes]) == 0
    assert verify(url)[0] == [] and verify(local)[0] == []


@pytest.mark.slow
def test_refilter_on_a_url_matches_the_local_refilter(url_run, local_run, capsys):
    run_objects = objects(url_run, "shards")
    records = read_records(Store(url_run))
    assert fates(url_run) == fates(local_run)  # the same run, on a URL and on disk
    run_kept = kept_keys(url_run)
    assert any(f == ("rejected", f[1], "shards") for f in fates(url_run).values()), "nothing to loosen"

    refilter_both(url_run, local_run, LOOSE)
    assert fates(url_run) == fates(local_run) and kept_keys(url_run) == kept_keys(local_run)
    loose_kept = kept_keys(url_run)
    assert set(run_kept) < set(loose_kept)  # pairs set aside in rejected shards came back
    assert "pairs kept" in capsys.readouterr().out

    cut = cut_between(url_run, 0.75)  # tighter than the run's own threshold
    refilter_both(url_run, local_run, f"filters.mouth_distance.min_lmd={cut}")
    tight = fates(url_run)
    assert tight == fates(local_run) and kept_keys(url_run) == kept_keys(local_run)
    assert 0 < len(kept_keys(url_run)) < len(run_kept)
    assert f"lmd_below_{cut:g}" in {f[1] for f in tight.values()}
    for pair in iter_pairs(storage.join(url_run, "manifest.json")):
        assert "filtered" not in pair["meta"] and pair["meta"]["refilter"]["thresholds"]["mouth_distance"]

    # the run's own shards untouched and still listed; the view the manifest names is the only one
    assert objects(url_run, "shards") == run_objects
    manifest = read_manifest(storage.join(url_run, "manifest.json"))
    listed = {e["url"] for f in ("rejected_shardlist", "source_shardlist") for e in manifest[f]}
    assert listed == {r["object"] for r in records.values() if r["object"]}
    view = storage.parent(manifest["table"])
    assert {storage.parent(e["url"]) for e in manifest["shardlist"]} == {view}
    assert {n.rsplit("/", 1)[0] for n in objects(url_run, "views")} == {view}
    assert storage.read_bytes(storage.join(url_run, "samples.parquet")) == \
        storage.read_bytes(storage.join(url_run, manifest["table"]))
    assert storage.isfile(storage.join(url_run, "refilter.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("point", REFILTER_FAULT_POINTS)
def test_a_refilter_stopped_at_a_fault_point_verifies_and_a_rerun_finishes(url_run, local_run, point,
                                                                          monkeypatch):
    # a threshold no refilter has used yet: a new view to build
    change = f"filters.mouth_distance.min_lmd={cut_between(url_run, 0.3 + 0.1 * REFILTER_FAULT_POINTS.index(point))}"
    before = read_manifest(storage.join(url_run, "manifest.json"))
    monkeypatch.setattr(faults, "_RULES", faults._parse(f"{point}=raise"))
    monkeypatch.setattr(faults, "_COUNTS", {})
    with pytest.raises(faults.InjectedFault):
        main(["refilter", url_run, change])
    assert verify(url_run)[0] == []  # the old manifest, or the new one: either verifies
    after = read_manifest(storage.join(url_run, "manifest.json"))
    assert (after == before) == (point != "refilter_committed")  # the manifest PUT is the commit

    monkeypatch.setattr(faults, "_RULES", {})
    assert main(["refilter", url_run, change]) == 0
    assert main(["refilter", str(local_run), change]) == 0
    assert fates(url_run) == fates(local_run) and kept_keys(url_run) == kept_keys(local_run)
    assert verify(url_run)[0] == []
    view = storage.parent(read_manifest(storage.join(url_run, "manifest.json"))["table"])
    assert {n.rsplit("/", 1)[0] for n in objects(url_run, "views")} == {view}


def test_a_url_that_is_no_run_is_refused_and_nothing_is_made(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["refilter", "memory://refilter-tests/nothing-here", LOOSE]) == 2
    assert "finish `factory run`" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [] and not storage.exists("memory://refilter-tests/nothing-here")


@pytest.mark.slow
def test_a_refilter_killed_on_s3_verifies_and_a_rerun_finishes(s3_bucket, talking_videos, run_threshold,
                                                               local_run):
    """The same on the local S3 server, each stop a real SIGKILL of a `factory refilter` process."""
    url = f"{s3_bucket}/run"
    config = str(Path(CONFIG).resolve())
    assert run_factory(url, *FINISHED_RUN, run_threshold, videos=talking_videos, config=config) == 0
    run_objects = objects(url, "shards")
    for i, point in enumerate(REFILTER_FAULT_POINTS):
        change = f"filters.mouth_distance.min_lmd={cut_between(url, 0.2 + 0.25 * i)}"
        killed = subprocess.run(factory_command("refilter", url, change), capture_output=True, text=True,
                                env={**os.environ, "FACTORY_FAULTS": f"{point}=kill"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        assert verify(url)[0] == []
        assert main(["refilter", url, change]) == 0
        assert main(["refilter", str(local_run), change]) == 0
        assert fates(url) == fates(local_run) and kept_keys(url) == kept_keys(local_run)
        assert verify(url)[0] == [] and main(["verify", url]) == 0
    assert objects(url, "shards") == run_objects
    view = storage.parent(read_manifest(storage.join(url, "manifest.json"))["table"])
    assert {n.rsplit("/", 1)[0] for n in objects(url, "views")} == {view}
