"""A finished run's outputs, read once for the report: summary, manifest, table, thresholds, timeline.
The run may lie in a folder or under an fsspec URL (`s3://bucket/run`): every file is read through
factory/storage.py."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory import storage
from manifests.format import read_manifest
from manifests.table import read_table

log = logging.getLogger(__name__)

TIMELINE = Path("state") / "timeline.json"  # written by pipelines/pseudo_pairs.finish


class ReportError(RuntimeError):
    """The folder is not a finished run (no manifest, no table)."""


@dataclass(frozen=True)
class Threshold:
    score: str  # without the table's "score_" prefix
    op: str  # ">=", ">", "<=", "<": what a kept pair satisfies
    value: float
    filter: str


@dataclass
class RunData:
    out: str | Path  # a folder (Path) or a URL (str)
    manifest: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]  # samples.parquet, one dict per row
    thresholds: list[Threshold] = field(default_factory=list)  # in pipeline order
    timeline: dict[str, Any] | None = None

    @property
    def pairs(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind") == "pair"]

    def score_names(self) -> list[str]:
        """Every recorded score, thresholded ones first (pipeline order), then the rest by name."""
        recorded = sorted({c[len("score_"):] for r in self.rows for c, v in r.items()
                           if c.startswith("score_") and v is not None})
        first = [t.score for t in self.thresholds if t.score in recorded]
        return list(dict.fromkeys(first + recorded))

    def counts(self) -> list[tuple[str, int]]:
        """The run's funnel, from the table (and the summary for what the table has no row for)."""
        by = Counter((r.get("kind"), r["fate"]) for r in self.rows)
        pairs = [r for r in self.rows if r.get("kind") == "pair"]
        set_aside = sum(1 for r in pairs if r["fate"] == "rejected" and r.get("shard"))
        videos_in = self.summary.get("videos_in", len({r.get("video_key") or r["key"] for r in self.rows}))
        return [
            ("video files skipped (not a video extension)", self.summary.get("files_skipped_by_extension", 0)),
            ("videos in", videos_in),
            ("videos rejected whole", by[("video", "rejected")]),
            ("clips cut", by[("clip", "rejected")] + len(pairs)),
            ("clips rejected", by[("clip", "rejected")]),
            ("pairs made", len(pairs)),
            ("pairs rejected", by[("pair", "rejected")]),
            ("pairs rejected but set aside in rejected shards (refilter can revisit)", set_aside),
            ("pairs kept (in the manifest's shards)", by[("pair", "kept")]),
        ]

    def rejections(self) -> list[tuple[str, int]]:
        """(reason, count), most frequent first; ties by name. Reasons that name another sample
        (`duplicate_of:KEY`) count as one family, `duplicate_of:<sample>`."""
        reasons = Counter(r["reason"] for r in self.rows if r["fate"] == "rejected" and r.get("reason"))
        grouped = group_reasons(reasons, {r["key"] for r in self.rows})
        return sorted(grouped.items(), key=lambda kv: (-kv[1], kv[0]))

    def stage_of(self, reason: str) -> str:
        """The stage that recorded a reason (or a `prefix:<sample>` family of them)."""
        family = reason.removesuffix(SAMPLE) + ":" if reason.endswith(SAMPLE) else None
        for r in self.rows:
            got = r.get("reason") if r["fate"] == "rejected" else None
            if got and (got == reason or (family and got.startswith(family))):
                return r.get("stage") or "?"
        return "?"


SAMPLE = ":<sample>"


def group_reasons(reasons: Counter, keys: set[str]) -> Counter:
    """Reasons whose part after ':' is a sample key merged into `prefix:<sample>`."""
    grouped: Counter = Counter()
    for reason, n in reasons.items():
        prefix, _, suffix = reason.partition(":")
        grouped[prefix + SAMPLE if suffix in keys else reason] += n
    return grouped


def load_run(out: str | Path) -> RunData:
    out = str(out).rstrip("/") if storage.is_url(out) else storage.local(out)
    manifest_path = storage.join(out, "manifest.json")
    if not storage.isfile(manifest_path):
        raise ReportError(f"{out} has no manifest.json: is it the output folder of a finished `factory run`?")
    manifest = read_manifest(manifest_path)
    table = storage.join(out, manifest.get("table", "samples.parquet"))
    if not storage.isfile(table):
        raise ReportError(f"{out} has no {storage.name(table)} (the per-sample table the manifest names)")
    summary = _json_or(storage.join(out, "summary.json"), manifest.get("stats", {}))
    timeline = _json_or(storage.join(out, *TIMELINE.parts), None)
    return RunData(out, manifest, summary, read_table(table), thresholds(manifest.get("config", {})), timeline)


def _json_or(path: str, default: Any) -> Any:
    """The JSON file's content, or `default` when there is no such file."""
    return json.loads(storage.read_text(path)) if storage.isfile(path) else default


def thresholds(config: dict[str, Any]) -> list[Threshold]:
    """Each enabled filter's thresholds, as the filter registry reads them from the run's config
    (the same rules `factory refilter` applies). A section that no longer validates (a filter
    since renamed or uninstalled) is skipped: its histogram then has no threshold line."""
    from factory.config import ConfigError, build
    from filters.registry import filter_specs

    found: list[Threshold] = []
    sections = config.get("filters") or {}
    for spec in filter_specs():
        if spec.name not in sections:
            continue
        try:
            settings = build(spec.settings, sections[spec.name], prefix=f"filters.{spec.name}.")
        except ConfigError as exc:
            log.warning("report: no thresholds for filters.%s: %s", spec.name, exc)
            continue
        if not settings.enabled:
            continue
        for score, (op, value) in spec.thresholds(settings).items():
            found.append(Threshold(score, op, float(value), spec.name))
    return found
