"""`factory report OUT`: one self-contained HTML page about a finished run.

What it shows, and where each number comes from (nothing is recomputed from pixels except the
gallery's difference panel):
- counts in and out, and rejections by reason: `samples.parquet` (the table the manifest names,
  so a refiltered run shows its refiltered fates) and `summary.json`;
- each filter's score histogram with its threshold line: the table's `score_*` columns and the
  thresholds of the filter registry applied to the manifest's config (the rules refilter uses);
- throughput per stage over time: `state/timeline.json` (records each stage finished, binned
  over wall time; written by the executor at the end of the run) and the summary's stage seconds;
- a gallery of pairs, real | synthetic | difference as looping animated WebP, with their scores:
  decoded from the shards the table names.

The page has no external references: plots are inline SVG, clips `data:` URIs, and a
Content-Security-Policy forbids any other load, so a browser shows it offline as it is.

Layout: data.py reads a run, svg.py draws plots, gallery.py makes the clips, page.py writes HTML.
"""

from factory.report.page import REPORT, ReportError, build_report

__all__ = ["REPORT", "ReportError", "build_report"]
