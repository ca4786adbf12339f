"""Workers that raise or die mid-batch under the Ray executor: retried a bounded number of
times, then recorded as failed with the reason; the run completes and its summary says so."""

import json

import pytest

from factory.inputs import video_key
from manifests.table import read_table
from manifests.verify import verify
from tests.cli import SMALL, executor, run_factory

SETTINGS = [*SMALL, "executor.max_retries=1"]


@pytest.mark.slow
def test_injected_worker_faults_under_ray(tmp_path, talking_videos, finished_run, monkeypatch):
    # the fault-free reference: the shared local run (only shard sizes differ, and retries, which
    # the local executor does not use; neither changes a record's fate or reason)
    reference = {r["key"]: r for r in read_table(finished_run / "samples.parquet")}
    one, two = video_key(talking_videos / "one.mp4"), video_key(talking_videos / "two.mp4")
    transient_exit, dies_always = f"{one}_c0000", f"{one}_c0001"
    transient_raise, raises_always = f"{two}_c0000", f"{two}_c0001"
    state = tmp_path / "fault_state"
    state.mkdir()
    monkeypatch.setenv("FACTORY_FAULTS_STATE", str(state))
    monkeypatch.setenv("FACTORY_FAULTS", ",".join([
        f"generate/{transient_exit}=exit*1",   # the worker process dies once: retried, then fine
        f"filter/{dies_always}=exit*99",       # dies every time: given up after max_retries
        f"generate/{transient_raise}=raise*1",  # raises once: the stage retries the record
        f"filter/{raises_always}=raise*99",    # raises every time: recorded with its reason
    ]))
    out = tmp_path / "faulty"
    assert run_factory(out, executor("ray"), *SETTINGS, videos=talking_videos) == 0
    table = {r["key"]: r for r in read_table(out / "samples.parquet")}
    assert table[dies_always]["reason"] == "worker_failed:ActorDiedError"
    assert table[raises_always]["reason"] == "mouth_distance_error:InjectedFault"
    for key in set(reference) - {dies_always, raises_always}:
        assert (table[key]["fate"], table[key]["reason"]) == (reference[key]["fate"], reference[key]["reason"]), key
    summary = json.loads((out / "summary.json").read_text())
    assert summary["worker_failures"] == 1
    assert summary["rejections"]["worker_failed:ActorDiedError"] == 1
    assert (state / f"generate__{transient_exit}").read_text() == ".."  # died on the 1st try, passed the 2nd
    assert verify(out)[0] == []
    # a worker's death says nothing about the sample: the next run retries it (the fault is gone)
    monkeypatch.delenv("FACTORY_FAULTS")
    assert run_factory(out, executor("ray"), *SETTINGS, videos=talking_videos) == 0
    table = {r["key"]: r for r in read_table(out / "samples.parquet")}
    assert (table[dies_always]["fate"], table[dies_always]["reason"]) == \
        (reference[dies_always]["fate"], reference[dies_always]["reason"])
    assert table[raises_always]["reason"] == "mouth_distance_error:InjectedFault"  # the sample's own error stays
    assert verify(out)[0] == []
