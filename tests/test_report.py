"""`factory report`: the page's content from a finished run (and a refiltered one), its
self-containment, the timeline it plots, and the page as headless Chromium shows it."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from collections import Counter
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from factory.cli import EXIT_NO_INPUT, main
from factory.executors.local import LocalExecutor
from factory.executors.stats import StageTimeline
from factory.records import Record
from factory.report import REPORT, build_report
from factory.report.data import group_reasons, load_run
from factory.report.page import throughput_rows
from factory.report.svg import heatmap, histogram, nice_ticks
from factory.stage import Resources, Stage
from manifests.table import read_table
from tests.browser import chromium, chromium_paths

ROOT = Path(__file__).resolve().parent.parent


# -- the timeline the executors record -------------------------------------------------------------

def test_the_timeline_bins_records_by_time_and_widens_its_bins_as_the_run_grows():
    now = [100.0]
    timeline = StageTimeline(max_bins=4, clock=lambda: now[0])
    timeline.add("a", 2)
    now[0] = 101.5
    timeline.add("a", 1)
    timeline.add("b", 3)
    timeline.add("b", 0)  # nothing to count
    assert timeline.as_dict() == {"started": 100.0, "bin_s": 1.0, "stages": {"a": [(0, 2), (1, 1)], "b": [(1, 3)]}}
    now[0] = 109.0  # bin 9 of 1 s: past max_bins, so the bins double twice (4 s each)
    timeline.add("b", 5)
    assert timeline.as_dict() == {"started": 100.0, "bin_s": 4.0, "stages": {"a": [(0, 3)], "b": [(0, 3), (2, 5)]}}


class Halver(Stage):
    name = "halver"

    def process(self, records):
        return [r if i % 2 == 0 else r.reject("odd") for i, r in enumerate(records)]


class Passer(Stage):
    name = "passer"

    def process(self, records):
        return records


def test_the_local_executor_counts_each_stages_records_in_its_timeline():
    executor = LocalExecutor()
    records = [Record(f"k{i}", "pair") for i in range(10)]
    stages = [Halver(), Passer()]
    for stage in stages:
        stage.resources.batch_size = 3
    out = list(executor.map(stages, records))
    assert len(out) == 10
    stages = executor.timeline()["stages"]
    totals = {name: sum(n for _, n in bins) for name, bins in stages.items()}
    assert totals == {name: counts["records"] for name, counts in executor.stage_stats().items()}
    assert totals["halver"] == 10 and 0 < totals["passer"] < 10  # only what the first one passed


def test_the_ray_executor_counts_each_fused_group_of_stages_in_its_timeline():
    import ray

    from factory.executors import ExecutorConfig
    from factory.executors.ray_executor import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        stages = [Halver(Resources(batch_size=3, pool_size=1)), Passer(Resources(batch_size=3, pool_size=1))]
        with RayExecutor(ExecutorConfig()) as executor:
            out = list(executor.map(stages, [Record(f"k{i}", "pair") for i in range(10)]))
            stages_seen = executor.timeline()["stages"]
    finally:
        ray.shutdown()
    assert len(out) == 10
    # same resources: one fused actor, timed as one group, counting the records sent to it
    assert {name: sum(n for _, n in bins) for name, bins in stages_seen.items()} == {"halver+passer": 10}


# -- plots -----------------------------------------------------------------------------------------

def test_a_histogram_draws_its_bars_and_a_line_at_each_threshold():
    plot = histogram([1.2, 1.5, 2.0, 2.1], [0.4, 0.7], "lmd (mouth_distance)", [(">=", 1.0)])
    assert plot.count('class="threshold"') == 1
    heights = [float(h) for h in re.findall(r'class="bar (?:kept|rejected)"[^>]*height="([\d.]+)"', plot)]
    assert len(heights) >= 3 and all(h > 0 for h in heights)
    assert "keep &gt;= 1" in plot
    assert histogram([], [], "empty").count("no values recorded") == 1


def test_throughput_rows_turn_binned_counts_into_rates_over_merged_steps():
    timeline = {"bin_s": 2.0, "stages": {"ingest": [[0, 4], [1, 2]], "encode": [[3, 1], [5, 3]]}}
    rows, step = throughput_rows(timeline, points=3)  # 6 bins of 2 s into 3 steps of 4 s
    assert step == 4.0
    assert rows == [("ingest", [1.5, 0.0, 0.0]), ("encode", [0.0, 0.25, 0.75])]
    plot = heatmap(rows, step, "t", "s")
    assert plot.count('class="cell"') == 3 and "peak 1.5" in plot


def test_reasons_that_name_a_sample_count_as_one_family():
    reasons = Counter({f"duplicate_of:k{i}": 1 for i in range(3)} | {"identity_error:ValueError": 2, "no_face": 3})
    assert group_reasons(reasons, {"k0", "k1", "k2", "k3"}) == {
        "duplicate_of:<sample>": 3, "identity_error:ValueError": 2, "no_face": 3}


def test_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0, 10, 5) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0.92, 1.0, 4) == pytest.approx([0.92, 0.94, 0.96, 0.98, 1.0])


# -- the page from a finished run ------------------------------------------------------------------

class _Refs(HTMLParser):
    """Every src/href in a page, the images' sources and the elements' classes."""

    def __init__(self):
        super().__init__()
        self.refs, self.images, self.classes = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.refs += [attrs[a] for a in ("src", "href", "xlink:href", "action") if a in attrs]
        if tag == "img":
            self.images.append(attrs["src"])
        self.classes += (attrs.get("class") or "").split()


def parse(html: str) -> _Refs:
    refs = _Refs()
    refs.feed(html)
    return refs


def webp_of(src: str) -> Image.Image:
    assert src.startswith("data:image/webp;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def test_factory_run_writes_the_report_and_its_timeline(finished_run):
    assert (finished_run / REPORT).is_file()
    timeline = json.loads((finished_run / "state" / "timeline.json").read_text())
    summary = json.loads((finished_run / "summary.json").read_text())
    recorded = {name: sum(n for _, n in bins) for name, bins in timeline["stages"].items()}
    assert recorded == {name: counts["records"] for name, counts in summary["stages"].items()}  # local: per stage


def test_the_report_shows_counts_rejections_scores_throughput_and_pairs(finished_run, tmp_path, capsys):
    dest = tmp_path / "r.html"
    assert main(["report", str(finished_run), "-o", str(dest)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {dest}"
    rows = read_table(finished_run / "samples.parquet")
    assert_the_page_shows_the_run(dest.read_text(), load_run(finished_run), rows)


def assert_the_page_shows_the_run(html: str, run, rows: list[dict]) -> None:
    """The report page's content checks (also applied to a run on object storage: test_verify_urls)."""
    page = parse(html)
    # self-contained: every reference is inline, and the page forbids any other load
    assert page.refs and all(ref.startswith("data:") for ref in page.refs)
    assert "url(" not in html and "@import" not in html
    assert "default-src 'none'" in html
    # counts and rejections, as the table has them
    kept = sum(1 for r in rows if r["kind"] == "pair" and r["fate"] == "kept")
    assert f"<td>pairs kept (in the manifest&#x27;s shards)</td><td class=\"n\">{kept}</td>" in html
    for reason, n in run.rejections():
        assert f"{escape(reason)} (" in html
    # a histogram per recorded score, a threshold line per threshold whose score was recorded
    scores = run.score_names()
    assert scores and all(f'data-score="{s}"' in html for s in scores)
    drawn = {t.score for t in run.thresholds} & set(scores)
    assert html.count('class="threshold"') == sum(1 for t in run.thresholds if t.score in drawn) > 0
    # throughput over time: a row per stage that the timeline recorded, its active steps coloured
    throughput = html[html.index('<section id="throughput">'):html.index('<section id="gallery">')]
    assert run.timeline["stages"] and all(f"<title>{name}</title></text>" in throughput for name in run.timeline["stages"])
    assert throughput.count('class="cell"') >= len(run.timeline["stages"])
    # the gallery: every kept pair (8 < 12), each a looping animation of three panels
    assert page.classes.count("pair") == len(page.images) == kept > 0
    for src in page.images:
        clip = webp_of(src)
        assert clip.n_frames > 1 and clip.info.get("loop") == 0
        assert clip.width == 3 * clip.height  # real | synthetic | difference, square crops


def test_a_refiltered_run_shows_its_new_threshold_and_the_pairs_set_aside(finished_run, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    lmds = sorted(r["score_lmd"] for r in read_table(out / "samples.parquet") if r.get("score_lmd") is not None)
    cut = round(float(np.median(lmds)), 4)
    assert main(["refilter", str(out), f"filters.mouth_distance.min_lmd={cut}"]) == 0
    assert main(["report", str(out), "--pairs", "2"]) == 0
    html = (out / REPORT).read_text()
    page = parse(html)
    failing = sum(1 for v in lmds if v < cut)
    assert f"keep lmd &gt;= {cut:g}" in html
    assert html.count('<figure class="pair rejected"') == min(4, failing) > 0  # set aside, with their reason
    assert html.count('<figure class="pair kept"') == 2
    assert len(page.images) == 2 + min(4, failing)
    assert html.count('<span class="fail">lmd ') == min(4, failing)


def test_a_missing_shard_leaves_only_its_pairs_out_of_the_gallery(finished_run, tmp_path, caplog):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    rows = [r for r in read_table(out / "samples.parquet") if r["kind"] == "pair" and r["fate"] == "kept"]
    gone = rows[0]["shard"]
    (out / gone).unlink()
    html = build_report(out).read_text()
    assert html.count('<figure class="pair kept"') == sum(1 for r in rows if r["shard"] != gone) > 0
    assert f"{gone} left out of the gallery" in caplog.text


def test_report_of_a_folder_that_is_not_a_run_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == EXIT_NO_INPUT
    assert "no manifest.json" in capsys.readouterr().err
    assert not (tmp_path / REPORT).exists()


# -- the page in a browser -------------------------------------------------------------------------

PROBLEMS_JS = """
const bad = Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 40));
const plots = Array.from(document.querySelectorAll('svg.plot')).map(s => s.getBoundingClientRect());
return {images: document.images.length, broken: bad, plots: plots.length,
        empty_plots: plots.filter(r => !(r.width > 0 && r.height > 0)).length,
        thresholds: document.querySelectorAll('svg.plot line.threshold').length,
        pairs: document.querySelectorAll('#gallery figure.pair').length,
        height: document.documentElement.scrollHeight};
"""


def page_state(driver, url: str) -> tuple[dict, list[dict]]:
    driver.get(url)
    return driver.execute_script(PROBLEMS_JS), [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def png_array(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


needs_chromium = pytest.mark.skipif(None in chromium_paths(), reason="Debian's chromium and chromium-driver are not "
                                    "installed (scripts/setup.sh installs them)")


@needs_chromium
def test_the_check_catches_broken_images_and_blocked_loads(tmp_path):
    """The negative control: the same checks on a page with a missing and an external image."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><html><head><meta http-equiv="Content-Security-Policy" '
                   "content=\"default-src 'none'; img-src data:\"></head><body>"
                   '<img alt="missing" src="missing.png"><img alt="far" src="http://example.invalid/x.png"></body></html>')
    with chromium(tmp_path / "profile") as driver:
        state, errors = page_state(driver, bad.as_uri())
    assert state["broken"] == ["missing", "far"]
    assert len(errors) == 2 and all("Content Security Policy" in e["message"] for e in errors)


@needs_chromium
def test_chromium_shows_the_reports_plots_and_gallery_without_errors(finished_run, tmp_path):
    dest = build_report(finished_run, tmp_path / "r.html")
    run = load_run(finished_run)
    with chromium(tmp_path / "profile") as driver:
        state, errors = page_state(driver, dest.as_uri())
        assert errors == []  # no console error, no blocked or failed load
        assert state["broken"] == [] and state["images"] == state["pairs"] > 0
        assert state["plots"] >= len(run.score_names()) + 2 and state["empty_plots"] == 0
        assert state["thresholds"] > 0
        driver.set_window_size(1300, min(state["height"] + 40, 12000))
        shot = driver.get_screenshot_as_png()
        (tmp_path / "report.png").write_bytes(shot)
        clip = png_array(driver.find_element("css selector", "#gallery figure.pair img").screenshot_as_png)
        plot = png_array(driver.find_element("css selector", "svg.plot line.threshold")
                         .find_element("xpath", "./ancestor::*[local-name()='svg']").screenshot_as_png)
    page = png_array(shot)
    assert page.shape[0] > 1000 and page.std() > 20  # not blank
    assert (page.min(axis=2) < 200).mean() > 0.05  # a good share of the page is drawn, not white
    h, w = clip.shape[:2]
    assert w > 2 * h and clip.std() > 20  # the clip painted (three panels, not a blank box)
    assert clip[:, : w // 3].mean() > 60  # the real face panel is not black
    red = (np.abs(plot - np.array([0xD6, 0x27, 0x28])).max(axis=2) < 40).sum()
    assert red > 20  # the dashed threshold line was painted
