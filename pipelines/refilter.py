"""`factory refilter OUT filters.KEY=VALUE ...`: re-judge a finished run with new thresholds.

Every filter's scores are in the ledger, and with `write.keep_rejected` (the default) the pairs
that failed a threshold sit in `shards/rejected-*.tar`. So re-thresholding needs no model: judge
the recorded scores again, copy the newly kept samples (bytes as they are, meta.json updated)
into a view `views/<tag>/pairs-*.tar`, and point `manifest.json` and `samples.parquet` at it.
The run's own shards are never modified, so any number of refilters can follow, tighter or looser.

Crash safety: the view (its shards and its table) is built under `views/<tag>.partial/` and
renamed when complete; then `manifest.json`, which names the view's shards and table, is replaced
atomically: that is the commit. A refilter killed at any point leaves a manifest that verifies
(the old one or the new one), and running it again finishes the job.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import webdataset as wds

from factory.config import ConfigError, save_config
from factory.faults import fault_point
from filters.registry import filter_specs, filter_thresholds, judge
from factory.files import atomic_path, fsync_dir, fsync_file
from manifests.format import read_manifest, shard_entry, write_json_atomic, write_manifest
from manifests.ledger import Ledger
from manifests.table import write_table
from manifests.writer import FIXED_MTIME, KEPT, PARTIAL, read_shard_log, tar_keys
from pipelines.settings import FactoryConfig, load_factory_config

TABLE = "samples.parquet"


def load_refilter_config(out: Path, overrides: list[str]) -> tuple[FactoryConfig, FactoryConfig]:
    """(the run's config, the run's config with the new thresholds)."""
    if not (out / "manifest.json").is_file():
        raise ConfigError(f"{out} has no manifest.json: finish `factory run` before refiltering")
    for item in overrides:
        if not item.split("=", 1)[0].strip().startswith("filters."):
            raise ConfigError(f"refilter changes only filters.* thresholds, not {item!r}: "
                              "other settings shape the samples and need `factory run`")
    run_cfg = load_factory_config(out / "config.yaml")
    cfg = load_factory_config(out / "config.yaml", overrides)
    ran = {spec.name for spec in filter_specs() if getattr(run_cfg.filters, spec.name).enabled}
    for name in (spec.name for spec in filter_specs()):
        if getattr(cfg.filters, name).enabled and name not in ran:
            raise ConfigError(f"filters.{name} did not run in {out}: there are no scores to judge "
                              "(enable it and run `factory run` again)")
    return run_cfg, cfg


def rejudge(entries: dict[str, dict], rules: list) -> tuple[dict[str, dict], list[str], int]:
    """New ledger-style entries, the keys now kept, and how many would pass but have no bytes.

    Only pairs whose fate was a threshold's are judged again: kept ones and those that failed a
    threshold (`meta.filtered`); errors and malformed answers stay as they were."""
    new, kept, lost = {}, [], 0
    for key, entry in entries.items():
        entry, meta = dict(entry), entry.get("meta") or {}
        if entry.get("kind") == "pair" and (entry["fate"] == "kept" or meta.get("filtered")):
            reason, stage = judge(meta.get("scores") or {}, rules)
            if reason is None and not entry.get("shard"):
                lost += 1  # failed a threshold while write.keep_rejected was off: no bytes to restore
            elif reason is None:
                entry.update(fate="kept", reason=None, stage=None)
                kept.append(key)
            else:
                entry.update(fate="rejected", reason=reason, stage=stage)
        new[key] = entry
    return new, sorted(kept), lost


def build_view(out: Path, tag: str, entries: dict[str, dict], kept: list[str], maxcount: int,
               stamp: dict[str, Any]) -> Path:
    """views/<tag>/: the kept samples copied out of the run's shards, and the table of every
    entry's new fate. Built under `.partial` and renamed whole, so a view that exists is complete."""
    view = out / "views" / tag
    if view.is_dir():
        return view
    partial = view.with_name(tag + PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    wanted = set(kept)
    with wds.ShardWriter(str(partial / f"{KEPT}-%06d.tar"), maxcount=maxcount, verbose=0, mtime=FIXED_MTIME) as sink:
        for url in sorted({entries[k]["shard"] for k in kept}):
            for sample in wds.WebDataset(str(out / url), shardshuffle=False, empty_check=False):
                if sample["__key__"] in wanted:
                    sink.write(_restamp(sample, stamp))
    rows = {key: dict(entry) for key, entry in entries.items()}
    for tar in sorted(partial.glob("*.tar")):
        fsync_file(tar)
        for key in tar_keys(tar)[0]:
            rows[key]["shard"] = (view / tar.name).relative_to(out).as_posix()
    write_table(partial / TABLE, list(rows.values()))
    fault_point("refilter_view")
    fsync_dir(partial)  # the view's entries, then the rename that publishes them
    os.replace(partial, view)
    fsync_dir(view.parent)
    return view


def _restamp(sample: dict, stamp: dict[str, Any]) -> dict:
    sample = {k: v for k, v in sample.items() if k not in ("__url__", "__local_path__")}
    meta = json.loads(sample["meta.json"])
    for name in ("filtered", "filtered_by"):
        meta.pop(name, None)
    meta["refilter"] = stamp
    sample["meta.json"] = json.dumps(meta, sort_keys=True).encode()
    return sample


def refilter(out: str | Path, overrides: list[str]) -> dict[str, Any]:
    out = Path(out)
    run_cfg, cfg = load_refilter_config(out, overrides)
    rules = filter_thresholds(cfg.filters)
    shards = read_shard_log(out / "state" / "shards.jsonl")
    run_kept = [e for e in shards.values() if Path(e["url"]).name.startswith(f"{KEPT}-")]
    run_rejected = [e for e in shards.values() if e not in run_kept]

    ledger = Ledger(out / "state" / "ledger.jsonl")
    ledger.close()
    entries, kept, lost = rejudge(ledger.entries, rules)
    stamp = {"thresholds": {name: {k: list(v) for k, v in rule.items()} for name, rule in rules}}
    tag = hashlib.sha1(json.dumps([stamp, sorted(e["md5sum"] for e in shards.values())],
                                  sort_keys=True).encode()).hexdigest()[:12]
    view = build_view(out, tag, entries, kept, cfg.write.shard_maxcount, stamp)

    view_shards = [shard_entry(p, len(tar_keys(p)[0]), out) for p in sorted(view.glob("*.tar"))]
    summary = _summary(out, entries, kept, lost, stamp)
    fault_point("refilter_manifest")
    # the manifest is the commit point: it names the view's shards and the view's table
    write_manifest(out / "manifest.json", view_shards, cfg.to_dict(), summary, run_rejected, run_kept,
                   table=(view / TABLE).relative_to(out).as_posix(),
                   sample_format=read_manifest(out / "manifest.json").get("sample_format", 1))  # bytes as they were
    fault_point("refilter_committed")
    with atomic_path(out / TABLE) as tmp:  # the usual place, for people and scripts
        shutil.copyfile(view / TABLE, tmp)
    write_json_atomic(out / "summary.json", summary)
    save_config(cfg, out / "refilter.yaml")
    for old in (out / "views").iterdir():  # views the manifest no longer points at
        if old.name != tag:
            shutil.rmtree(old, ignore_errors=True)
    return summary


def _summary(out: Path, entries: dict[str, dict], kept: list[str], lost: int, stamp: dict) -> dict[str, Any]:
    summary = read_manifest(out / "manifest.json").get("stats", {})
    reasons = Counter(e["reason"] for e in entries.values() if e["fate"] == "rejected")
    summary.update(pairs_written=len(kept), rejections=dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
                   refilter={**stamp, "kept": len(kept), "would_pass_without_bytes": lost})
    return summary
