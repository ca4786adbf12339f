"""`factory refilter`: re-threshold recorded scores, tighter or looser, without regenerating."""

import json

import pytest

from factory.cli import main
from manifests.reader import iter_pairs
from manifests.table import read_table
from manifests.verify import verify
from pipelines.refilter import rejudge
from tests.cli import LOCAL, SMALL, factory_command, run_factory


@pytest.fixture(scope="module")
def strict_run(tmp_path_factory, talking_videos):
    """A run whose LMD threshold nobody passes: every pair is set aside in rejected shards."""
    out = tmp_path_factory.mktemp("refilter") / "out"
    code = run_factory(out, *SMALL, LOCAL, "write.shard_maxcount=2", "augment.share=0",
                       "filters.mouth_distance.min_lmd=1000", videos=talking_videos)
    assert code == 0
    return out


def kept_keys(out):
    return sorted(p["__key__"] for p in iter_pairs(out / "manifest.json", decode=False))


def pair_rows(out):
    return {r["key"]: r for r in read_table(out / "samples.parquet") if r["kind"] == "pair"}


def test_failing_pairs_are_set_aside_with_scores(strict_run):
    manifest = json.loads((strict_run / "manifest.json").read_text())
    rows = pair_rows(strict_run)
    assert len(rows) >= 4 and manifest["shardlist"] == [] and manifest["rejected_shardlist"]
    assert all(r["fate"] == "rejected" and r["reason"] == "lmd_below_1000" for r in rows.values())
    assert all(r["shard"].startswith("shards/rejected-") for r in rows.values())
    assert all(r["score_csim"] > 0.9 and r["score_lmd"] > 0 for r in rows.values())  # every filter scored
    assert verify(strict_run)[0] == []


def test_loosen_then_tighten(strict_run, capsys):
    rows = pair_rows(strict_run)
    assert main(["refilter", str(strict_run), "filters.mouth_distance.min_lmd=0"]) == 0
    assert kept_keys(strict_run) == sorted(rows)  # everything comes back from the rejected shards
    assert verify(strict_run)[0] == []
    assert "pairs kept" in capsys.readouterr().out

    lmds = sorted(r["score_lmd"] for r in rows.values())
    cut = (lmds[len(lmds) // 2 - 1] + lmds[len(lmds) // 2]) / 2
    assert main(["refilter", str(strict_run), f"filters.mouth_distance.min_lmd={cut}"]) == 0
    expected = sorted(k for k, r in rows.items() if r["score_lmd"] >= cut)
    assert kept_keys(strict_run) == expected and 0 < len(expected) < len(rows)
    table = pair_rows(strict_run)
    assert all(table[k]["fate"] == "kept" for k in expected)
    assert {table[k]["reason"] for k in set(rows) - set(expected)} == {f"lmd_below_{cut:g}"}
    for pair in iter_pairs(strict_run / "manifest.json"):
        assert "filtered" not in pair["meta"] and pair["meta"]["refilter"]["thresholds"]["mouth_distance"]
    assert verify(strict_run)[0] == []
    assert len(list((strict_run / "views").iterdir())) == 1  # only the view the manifest points at


def test_identity_threshold_refilters_too(strict_run):
    assert main(["refilter", str(strict_run), "filters.mouth_distance.min_lmd=0",
                 "filters.identity.min_csim=0.9999"]) == 0
    rows = pair_rows(strict_run)
    assert all(r["fate"] == "rejected" and r["reason"] == "csim_below_0.9999" for r in rows.values())
    assert kept_keys(strict_run) == [] and verify(strict_run)[0] == []


def test_a_leftover_partial_view_is_rebuilt(strict_run):
    leftover = strict_run / "views" / "deadbeef.partial"
    leftover.mkdir(parents=True)
    (leftover / "pairs-000000.tar").write_bytes(b"torn")
    assert main(["refilter", str(strict_run), "filters.mouth_distance.min_lmd=0"]) == 0
    assert not leftover.exists() and verify(strict_run)[0] == []


def test_refilter_refuses_what_it_cannot_do(strict_run, tmp_path, capsys):
    assert main(["refilter", str(strict_run), "ingest.crop_size=128"]) == 2
    assert "only filters.*" in capsys.readouterr().err
    assert main(["refilter", str(strict_run), "filters.vlm_quality.enabled=true"]) == 2
    assert "filters.vlm_quality did not run" in capsys.readouterr().err
    assert main(["refilter", str(tmp_path)]) == 2
    assert "finish `factory run`" in capsys.readouterr().err


def test_rejudge_counts_pairs_without_bytes():
    entries = {
        "a": {"key": "a", "kind": "pair", "fate": "kept", "shard": "shards/pairs-000000.tar",
              "meta": {"scores": {"lmd": 2.0}}},
        "b": {"key": "b", "kind": "pair", "fate": "rejected", "reason": "lmd_below_3", "shard": None,
              "meta": {"scores": {"lmd": 2.5}, "filtered": "lmd_below_3"}},  # keep_rejected was off
        "c": {"key": "c", "kind": "pair", "fate": "rejected", "reason": "generate_error:X", "meta": {}},
    }
    rules = [("mouth_distance", {"lmd": (">=", 2.2)})]
    new, kept, lost = rejudge(entries, rules)
    assert kept == [] and lost == 1
    assert new["a"]["reason"] == "lmd_below_2.2" and new["c"] == entries["c"]
    new, kept, lost = rejudge(entries, [("mouth_distance", {"lmd": (">=", 1.0)})])
    assert kept == ["a"] and lost == 1 and new["b"]["fate"] == "rejected"


REFILTER_KILL_POINTS = ["refilter_view", "refilter_manifest", "refilter_committed"]


@pytest.mark.parametrize("point", REFILTER_KILL_POINTS)
def test_a_killed_refilter_leaves_a_valid_output_and_finishes_on_rerun(strict_run, point):
    import os
    import signal
    import subprocess

    rows = pair_rows(strict_run)
    lmds = sorted(r["score_lmd"] for r in rows.values() if r["score_lmd"] is not None)
    cut = lmds[len(lmds) // 3] + 1e-3 * (1 + REFILTER_KILL_POINTS.index(point))  # unused so far: a new view
    change = f"filters.mouth_distance.min_lmd={cut}"
    killed = subprocess.run(factory_command("refilter", str(strict_run), change),
                            env={**os.environ, "FACTORY_FAULTS": f"{point}=kill"}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert verify(strict_run)[0] == []  # the old manifest, or the new one: either verifies
    assert main(["refilter", str(strict_run), change]) == 0
    assert kept_keys(strict_run) == sorted(k for k, r in rows.items() if r["score_lmd"] >= cut)
    assert verify(strict_run)[0] == [] and not list(strict_run.rglob("*.partial"))
    assert pair_rows(strict_run) == {k: r for k, r in read_table_of_manifest(strict_run).items()}


def read_table_of_manifest(out):
    manifest = json.loads((out / "manifest.json").read_text())
    return {r["key"]: r for r in read_table(out / manifest["table"]) if r["kind"] == "pair"}
