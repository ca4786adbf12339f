"""A short soak (scripts/soak.py): consecutive runs into one output with a kill -9, shard damage and
config changes between them; every run must end verified, with a manifest that matches its shards
and config, and with the samples of a clean run."""

import random
import sys
from pathlib import Path

import pytest

from tests.cli import FINISHED_RUN

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import soak  # noqa: E402


def test_the_random_plan_is_seeded_and_mixes_every_kind_of_abuse():
    steps = soak.plan(random.Random(0), 20)
    assert steps == soak.plan(random.Random(0), 20)
    assert any(s.kill for s in steps) and any(s.damage for s in steps)
    assert any(s.change and s.change[0] in dict(soak.SHAPING_CHANGES) for s in steps)
    assert any(s.change and s.change[0] in dict(soak.RUNNING_CHANGES) for s in steps)


@pytest.mark.slow
def test_a_short_soak_stays_consistent(finished_run, talking_videos, tmp_path):
    assert soak.BASE == FINISHED_RUN  # so the session's finished run is the clean reference
    steps = [
        # a deleted shard is remade; the driver is killed while writing it (tearing the shard log's
        # last line), the rerun finishes it
        soak.Step(damage=["delete_shard"], kill="fault:pair_written@1", damage_after_kill=["torn_shard_log"]),
        # a shaping change is refused (exit 2, out untouched); the run goes on with the old settings
        # and repairs a bit flip and a lost manifest
        soak.Step(change=("write.shard_maxcount", 5), damage=["flip_shard", "delete_manifest"]),
        # a change in how it runs resumes the output; a truncated shard and a torn ledger line
        soak.Step(change=("write.previews", 0), damage=["truncate_shard", "torn_ledger", "unended_log_lines"]),
    ]
    key = soak.settings_key(tmp_path / "out", talking_videos, list(FINISHED_RUN))
    result = soak.soak(tmp_path, talking_videos, steps, references={key: finished_run}, start_from=finished_run)
    runs = result["runs"]
    assert result["ok"], [r["problems"] for r in runs]
    assert [a["rc"] for a in runs[0]["attempts"]] == [-9, 0]  # the kill landed, the rerun finished
    assert runs[1]["refused"] and [a["rc"] for a in runs[1]["attempts"]] == [2, 0]
    assert all(r["verify_rc"] == 0 for r in runs)
    # each damaged shard remade once (the first by the run that was killed, before the kill)
    assert [len(r["repaired"]) for r in runs] == [0, 1, 1]
