"""The report page: sections of counts, rejections, score histograms, throughput and a gallery,
written as one HTML file with everything inline: atomically to a local path, or as one object
(one PUT) to an fsspec URL, by default beside the run it reports on."""

from __future__ import annotations

import base64
import math
import time
from html import escape
from pathlib import Path
from typing import Any

from factory import storage
from factory.report import gallery, svg
from factory.report.data import ReportError, RunData, load_run
from factory.stage import threshold_verdict

REPORT = "report.html"  # inside the run's folder
# nothing but inline styles and data: images; any other load is refused (and shows as an error)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin-bottom:2px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
.sub{color:#666;font-size:13px} table{border-collapse:collapse;font-size:13px}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left} td.n{text-align:right}
.plots{display:flex;flex-wrap:wrap;gap:12px} .plots figure{margin:0}
figcaption{font-size:12px;color:#555;max-width:420px}
.gallery{display:flex;flex-wrap:wrap;gap:16px}
.pair{margin:0;padding:8px;border:1px solid #ddd;border-radius:4px;background:#fafafa}
.pair.rejected{border-color:#f28e2b;background:#fff6ee}
.pair img{display:block;image-rendering:auto}
.pair .key{font-family:monospace;font-size:12px} .pair .scores{font-size:12px;margin-top:4px}
.fail{color:#d62728;font-weight:bold} .cols{font-size:11px;color:#777;display:flex}
.cols span{flex:1;text-align:center}
"""


def build_report(out: str | Path, dest: str | Path | None = None, pairs: int = 12,
                 set_aside: int = 4) -> str | Path:
    """Write the report of the run in `out` to `dest` (default OUT/report.html); returns where it
    went: a Path for a local file, the URL (str) for an object. Either side may be a URL (a run on
    s3:// can be reported to a local file, to open in a browser). `pairs` kept pairs and up to
    `set_aside` pairs that failed a threshold go into the gallery."""
    run = load_run(out)
    dest = dest if dest is not None else storage.join(out, REPORT)
    dest = str(dest) if storage.is_url(dest) else Path(dest)
    storage.put_bytes(dest, render(run, pairs, set_aside))
    return dest


def render(run: RunData, pairs: int = 12, set_aside: int = 4) -> str:
    name = run.manifest.get("name") or storage.name(run.out)
    made = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    sections = [counts_section(run), rejections_section(run), scores_section(run),
                throughput_section(run), gallery_section(run, pairs, set_aside)]
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<link rel="icon" href="data:,">'
            f"<title>factory report: {escape(name)}</title><style>{STYLE}</style></head><body>"
            f"<h1>factory report: {escape(name)}</h1>"
            f'<div class="sub">{escape(str(run.out))} &middot; made {made}</div>'
            + "".join(sections) + "</body></html>\n")


def _table(rows: list[tuple], head: tuple = ()) -> str:
    h = "<tr>" + "".join(f"<th>{escape(str(c))}</th>" for c in head) + "</tr>" if head else ""
    body = "".join("<tr>" + "".join(
        f'<td class="n">{svg.fmt(c) if isinstance(c, float) else c}</td>' if isinstance(c, (int, float))
        else f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{h}{body}</table>"


def counts_section(run: RunData) -> str:
    s = run.summary
    timing = [("wall time (s)", float(s.get("wall_s", 0.0))), ("pairs written per s", float(s.get("pairs_per_s", 0.0))),
              ("worker failures (recorded as rejections)", int(s.get("worker_failures", 0)))]
    refilter = s.get("refilter")
    note = ('<p class="sub">This run was refiltered: fates and thresholds are those of the latest refilter.</p>'
            if refilter else "")
    return (f'<section id="counts"><h2>Counts in and out</h2>{note}'
            f'{_table(run.counts() + timing)}</section>')


def rejections_section(run: RunData) -> str:
    items = [(f"{reason} ({run.stage_of(reason)})", n) for reason, n in run.rejections()]
    return (f'<section id="rejections"><h2>Rejections by reason</h2>'
            f'<div class="plots">{svg.hbars(items, "rejected records by reason (stage)")}</div></section>')


def scores_section(run: RunData) -> str:
    pairs = run.pairs
    by_score: dict[str, list] = {}
    for t in run.thresholds:
        by_score.setdefault(t.score, []).append(t)
    figures = []
    for score in run.score_names():
        col = f"score_{score}"
        kept = [r[col] for r in pairs if r["fate"] == "kept" and r.get(col) is not None]
        rejected = [r[col] for r in pairs if r["fate"] == "rejected" and r.get(col) is not None]
        rules = by_score.get(score, [])
        owner = ", ".join(sorted({t.filter for t in rules})) or "recorded only, no threshold"
        title = f"{score} ({owner})"
        plot = svg.histogram(kept, rejected, title, [(t.op, t.value) for t in rules])
        caption = ("keep " + " and ".join(f"{t.score} {t.op} {t.value:g}" for t in rules)
                   if rules else "no threshold: shown for reference")
        figures.append(f'<figure data-score="{escape(score)}">{plot}<figcaption>{escape(caption)}; '
                       f"{len(kept)} kept, {len(rejected)} rejected pairs with this score</figcaption></figure>")
    if not figures:
        figures.append('<p class="sub">No pair scores recorded (no pair reached a filter).</p>')
    return (f'<section id="scores"><h2>Filter scores</h2><p class="sub">Every recorded score of the '
            f"pairs, kept and rejected stacked; the dashed line is the filter's threshold, the shaded side "
            f'fails it.</p><div class="plots">{"".join(figures)}</div></section>')


def throughput_rows(timeline: dict[str, Any], points: int = 60) -> tuple[list[tuple[str, list[float]]], float]:
    """(stage, records per second in each step) rows and the step in seconds: the timeline's bins
    merged into at most `points` steps, so single-record batches read as a rate."""
    bin_s = float(timeline.get("bin_s", 1.0))
    stages = timeline.get("stages") or {}
    last = max((i for bins in stages.values() for i, _ in bins), default=-1)
    if last < 0:
        return [], bin_s
    k = max(1, math.ceil((last + 1) / points))
    step = bin_s * k
    rows = []
    for name, bins in stages.items():
        counts = [0.0] * (last // k + 1)
        for i, n in bins:
            counts[i // k] += n
        rows.append((name, [c / step for c in counts]))
    return rows, step


def throughput_section(run: RunData) -> str:
    stages = run.summary.get("stages") or {}
    rows = [(name, int(c.get("records", 0)), float(c.get("seconds", 0.0)),
             float(c["records"] / c["seconds"]) if c.get("seconds") else 0.0) for name, c in stages.items()]
    table = _table(rows, ("stage", "records in", "busy seconds (all workers)", "records per busy second"))
    bars = svg.hbars([(name, float(c.get("seconds", 0.0))) for name, c in stages.items()],
                     "busy seconds per stage (summed over workers)", unit=" s") if stages else ""
    if run.timeline:
        rows, step = throughput_rows(run.timeline)
        plot = svg.heatmap(rows, step, f"records finished per second, by stage ({step:g} s steps)",
                           "seconds since the run started")
        note = ("Stages that share resources ran fused in one Ray actor and are timed as one "
                "(their names joined by +)." if any("+" in n for n in run.timeline.get("stages") or {}) else "")
    else:
        plot, note = "", "This run recorded no timeline (state/timeline.json): made before it existed, or still running."
    return (f'<section id="throughput"><h2>Throughput per stage</h2><p class="sub">{escape(note)}</p>'
            f'<div class="plots">{plot}{bars}</div>{table}</section>')


def gallery_section(run: RunData, pairs: int, set_aside: int) -> str:
    chosen = gallery.pick(run.pairs, pairs, set_aside)
    rules = {t.score: t for t in run.thresholds}
    figures = []
    decoded = list(gallery.samples(run.out, chosen))
    for row, sample in decoded:
        clip = gallery.clip_of(sample)
        if clip is None:
            continue
        src = "data:image/webp;base64," + base64.b64encode(clip).decode("ascii")
        fate = "kept" if row["fate"] == "kept" else f"set aside: {row.get('reason')}"
        scores = []
        for col in sorted(c for c in row if c.startswith("score_") and row[c] is not None):
            name, value = col[len("score_"):], row[col]
            rule = rules.get(name)
            failing = rule is not None and not _passes(value, rule.op, rule.value)
            text = f"{escape(name)} {svg.fmt(value)}"
            scores.append(f'<span class="fail">{text}</span>' if failing else text)
        figures.append(
            f'<figure class="pair {"kept" if row["fate"] == "kept" else "rejected"}" data-key="{escape(row["key"])}">'
            f'<div class="cols"><span>real</span><span>synthetic</span><span>difference &times;{gallery.DIFF_GAIN:g}</span></div>'
            f'<img src="{src}" alt="{escape(row["key"])}: real, synthetic, difference">'
            f'<figcaption><div class="key">{escape(row["key"])} &middot; {escape(fate)}</div>'
            f'<div class="scores">{" &middot; ".join(scores) or "no scores"}</div></figcaption></figure>')
    if not figures:
        figures.append('<p class="sub">No pair with bytes to show (nothing written, or keep_rejected off).</p>')
    n_kept = sum(1 for r in run.pairs if r["fate"] == "kept")
    shown = sum(1 for r, _ in decoded if r["fate"] == "kept")
    return (f'<section id="gallery"><h2>Pairs</h2><p class="sub">{shown} of {n_kept} kept pairs '
            f"(spread over the run), {len(decoded) - shown} set aside by a threshold; each loops real | synthetic | "
            f"difference. Scores failing a threshold are in red.</p>"
            f'<div class="gallery">{"".join(figures)}</div></section>')


def _passes(value: float, op: str, threshold: float) -> bool:
    return threshold_verdict({"s": value}, {"s": (op, threshold)}) is None


__all__ = ["REPORT", "ReportError", "build_report", "render"]
