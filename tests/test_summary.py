from factory.summary import format_summary, summarise

ENTRIES = [{"kind": "pair", "fate": "kept"}, {"kind": "pair", "fate": "rejected", "reason": "lmd_below_1"}]


def test_stage_stats_go_into_the_summary_one_line_each():
    stats = {"generate": {"records": 2, "seconds": 1.5, "passed": 2},
             "mouth_distance": {"records": 2, "seconds": 0.25, "passed": 1, "dropped_lmd_below_1": 1}}
    summary = summarise(ENTRIES, 1, 2.0, 1, 25, 0, 0, stage_stats=stats)
    assert summary["stages"] == stats
    lines = format_summary(summary).splitlines()
    assert lines[lines.index("stages (this run):") + 1].split() == ["generate", "2", "in", "2", "passed", "0",
                                                                     "dropped", "1.5", "s"]
    assert lines[-1].split()[:7] == ["mouth_distance", "2", "in", "1", "passed", "1", "dropped"]


def test_without_stage_stats_the_summary_has_no_stage_lines():
    summary = summarise(ENTRIES, 1, 2.0, 1, 25, 0, 0)
    assert summary["stages"] == {} and "stages" not in format_summary(summary)
