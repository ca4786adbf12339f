"""bench/all.py's table: one markdown row per measured line, a failed bench named with its error.
(The benches themselves are not tests: `bench/all.py` runs them.)"""

from bench.all import BENCHES, format_table


def test_table_rows_and_failures():
    results = [
        {"bench": "shards", "peak_rss_mb": 633.0, "wall_s": 9.1, "cpu_s": 4.0, "rows": [
            {"name": "ShardSink", "throughput": 128.5, "unit": "samples/s", "ratio": 0.42,
             "reference": "raw TarWriter (306 samples/s)"},
            {"name": "raw", "throughput": 306.0, "unit": "samples/s", "ratio": None, "reference": "",
             "peak_rss_mb": 100.0}]},
        {"bench": "syncnet", "rows": [], "error": "over its 150 s limit", "wall_s": 150.0, "cpu_s": 70.0},
    ]
    lines = format_table(results).splitlines()
    assert len(lines) == 2 + 3
    assert lines[2] == ("| shards | ShardSink | 128.5 | samples/s | 0.42 | raw TarWriter (306 samples/s) | 633 "
                        "| 9.1 / 4.0 |")
    assert "| 306 | samples/s |  |  | 100 |" in lines[3]  # no ratio; the row's own peak wins
    assert "failed: over its 150 s limit" in lines[4] and "syncnet" in lines[4]


def test_every_listed_bench_has_a_script():
    assert all(b.script.is_file() for b in BENCHES)
    assert len({b.name for b in BENCHES}) == len(BENCHES)
