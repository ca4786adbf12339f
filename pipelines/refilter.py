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

`OUT` may be an fsspec URL (a run made with `out=s3://...`, manifests/object_commit.py). Its
ledger is then the commit records' sample entries, and there is no rename: each view shard is one
object (one PUT) under `views/<tag>/`, the view's table is written after them, so a view whose
table exists is complete (a view is deleted table first); `manifest.json`, one PUT, last, is the
commit. The tag is the thresholds' and the run shards' hash, so a rerun after a kill rewrites the
same names.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import webdataset as wds

from factory import storage
from factory.config import ConfigError, config_yaml
from factory.faults import fault_point
from filters.registry import filter_specs, filter_thresholds, judge
from factory.files import atomic_path, fsync_dir, fsync_file
from manifests.format import read_manifest, shard_entry, write_json_atomic, write_manifest
from manifests.ledger import Ledger, is_retried
from manifests.object_commit import Store, manifest_entry, read_records
from manifests.reader import shard_samples
from manifests.table import write_table
from manifests.writer import FIXED_MTIME, KEPT, PARTIAL, read_shard_log, safe_member, tar_keys
from pipelines.settings import FactoryConfig, load_factory_config

TABLE = "samples.parquet"
VIEWS = "views"


def load_refilter_config(out: Path | str, overrides: list[str]) -> tuple[FactoryConfig, FactoryConfig]:
    """(the run's config, the run's config with the new thresholds)."""
    if not storage.isfile(storage.join(out, "manifest.json")):
        raise ConfigError(f"{out} has no manifest.json: finish `factory run` before refiltering")
    for item in overrides:
        if not item.split("=", 1)[0].strip().startswith("filters."):
            raise ConfigError(f"refilter changes only filters.* thresholds, not {item!r}: "
                              "other settings shape the samples and need `factory run`")
    if not storage.isfile(storage.join(out, "config.yaml")):
        raise ConfigError(f"{out} has no config.yaml: not a run's output")
    with storage.local_file(storage.join(out, "config.yaml")) as config:  # the config loader reads local files
        run_cfg = load_factory_config(config)
        cfg = load_factory_config(config, overrides)
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


# -- what the run recorded: (ledger entries by key, its kept shards, its rejected shards) ----------

def local_run(out: Path) -> tuple[dict[str, dict], list[dict], list[dict]]:
    shards = read_shard_log(out / "state" / "shards.jsonl")
    run_kept = [e for e in shards.values() if Path(e["url"]).name.startswith(f"{KEPT}-")]
    ledger = Ledger(out / "state" / "ledger.jsonl")
    ledger.close()
    return ledger.entries, run_kept, [e for e in shards.values() if e not in run_kept]


def object_run(out: str) -> tuple[dict[str, dict], list[dict], list[dict]]:
    """The same from the commit records (read only: `recover` deletes, and is the run driver's)."""
    records = read_records(Store(out))
    entries = {}
    for record in records.values():
        for sample in record["samples"]:
            if not is_retried(sample):  # as the local ledger reads itself: a dead worker's line is no fate
                entries[sample["key"]] = sample
    shards = [(name, manifest_entry(r)) for name, r in sorted(records.items()) if r["object"] is not None]
    run_kept = [e for name, e in shards if name.startswith(f"{KEPT}-")]
    return entries, run_kept, [e for name, e in shards if not name.startswith(f"{KEPT}-")]


# -- the view -------------------------------------------------------------------------------------

def copy_kept(out: Path | str, entries: dict[str, dict], kept: list[str], sink: wds.ShardWriter,
              stamp: dict[str, Any]) -> None:
    """The kept samples, read out of the run's shards (local files or objects), into `sink`."""
    wanted = set(kept)
    for rel in sorted({entries[k]["shard"] for k in kept}):
        for sample in shard_samples([str(storage.child(out, rel))]):
            if sample["__key__"] in wanted:
                sink.write(_restamp(sample, stamp))


def build_view(out: Path, tag: str, entries: dict[str, dict], kept: list[str], maxcount: int,
               stamp: dict[str, Any]) -> Path:
    """views/<tag>/: the kept samples copied out of the run's shards, and the table of every
    entry's new fate. Built under `.partial` and renamed whole, so a view that exists is complete."""
    view = out / VIEWS / tag
    if view.is_dir():
        return view
    partial = view.with_name(tag + PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with wds.ShardWriter(str(partial / f"{KEPT}-%06d.tar"), maxcount=maxcount, verbose=0, mtime=FIXED_MTIME) as sink:
        copy_kept(out, entries, kept, sink, stamp)
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


def local_view_shards(out: Path, view: Path) -> list[dict[str, Any]]:
    return [shard_entry(p, len(tar_keys(p)[0]), out) for p in sorted(view.glob("*.tar"))]


def build_object_view(out: str, tag: str, entries: dict[str, dict], kept: list[str], maxcount: int,
                      stamp: dict[str, Any]) -> list[dict[str, Any]]:
    """build_view on object storage; the view's shards as manifest entries. Each tar is built in
    memory and written as one object; the table goes last, so a view with a table is complete.
    Without one, what a killed attempt left under views/<tag>/ is deleted and the view rebuilt."""
    view = f"{VIEWS}/{tag}"
    if storage.isfile(storage.join(out, view, TABLE)):
        return [_object_shard_entry(rel, storage.read_bytes(storage.join(out, rel)))
                for rel in _view_shards(out, view)]
    storage.remove(storage.join(out, view))
    buffers: dict[str, io.BytesIO] = {}
    shards: list[dict[str, Any]] = []
    rows = {key: dict(entry) for key, entry in entries.items()}

    def publish(rel: str) -> None:  # ShardWriter's post: the tar is closed, its bytes are whole
        data = buffers.pop(rel).getvalue()
        storage.put_bytes(storage.join(out, rel), data)
        shards.append(_object_shard_entry(rel, data))
        for key in _tar_keys(data):
            rows[key]["shard"] = rel

    def open_buffer(rel: str) -> io.BytesIO:
        buffers[rel] = io.BytesIO()
        return buffers[rel]

    with wds.ShardWriter(f"{view}/{KEPT}-%06d.tar", maxcount=maxcount, verbose=0, mtime=FIXED_MTIME,
                         opener=open_buffer, post=publish) as sink:
        copy_kept(out, entries, kept, sink, stamp)
    fault_point("refilter_view")
    write_table(storage.join(out, view, TABLE), list(rows.values()))  # last: the view is complete
    return shards


def _view_shards(out: str, view: str) -> list[str]:
    """The tars under views/<tag>/, relative to the run."""
    root = storage.join(out, view)
    return [f"{view}/{storage.name(url)}" for url in storage.ls(root) if storage.name(url).endswith(".tar")]


def _object_shard_entry(rel: str, data: bytes) -> dict[str, Any]:
    """manifests.format.shard_entry of a shard held in memory."""
    return {"url": rel, "nsamples": len(_tar_keys(data)), "filesize": len(data),
            "md5sum": hashlib.md5(data).hexdigest()}


def _tar_keys(data: bytes) -> list[str]:
    """manifests.writer.tar_keys of a tar's bytes: its sample keys, in order."""
    keys: dict[str, None] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if not safe_member(member.name):
                raise ValueError(f"unsafe member name {member.name!r} in a view shard")
            keys.setdefault(member.name.partition(".")[0])
    return list(keys)


def _restamp(sample: dict, stamp: dict[str, Any]) -> dict:
    sample = {k: v for k, v in sample.items() if k not in ("__url__", "__local_path__")}
    meta = json.loads(sample["meta.json"])
    for name in ("filtered", "filtered_by"):
        meta.pop(name, None)
    meta["refilter"] = stamp
    sample["meta.json"] = json.dumps(meta, sort_keys=True).encode()
    return sample


# -- the whole refilter -----------------------------------------------------------------------------

def refilter(out: str | Path, overrides: list[str]) -> dict[str, Any]:
    remote = storage.is_url(out)
    out = str(out).rstrip("/") if remote else storage.local(out)
    storage.forget_listings(out)  # s3fs's cached listings: see what the run wrote since
    run_cfg, cfg = load_refilter_config(out, overrides)
    rules = filter_thresholds(cfg.filters)
    recorded, run_kept, run_rejected = object_run(out) if remote else local_run(out)
    entries, kept, lost = rejudge(recorded, rules)
    stamp = {"thresholds": {name: {k: list(v) for k, v in rule.items()} for name, rule in rules}}
    tag = hashlib.sha1(json.dumps([stamp, sorted(e["md5sum"] for e in run_kept + run_rejected)],
                                  sort_keys=True).encode()).hexdigest()[:12]
    if remote:
        view_shards = build_object_view(out, tag, entries, kept, cfg.write.shard_maxcount, stamp)
    else:
        view_shards = local_view_shards(out, build_view(out, tag, entries, kept, cfg.write.shard_maxcount, stamp))
    table = f"{VIEWS}/{tag}/{TABLE}"
    manifest = storage.child(out, "manifest.json")
    summary = _summary(manifest, entries, kept, lost, stamp)
    fault_point("refilter_manifest")
    # the manifest is the commit point: it names the view's shards and the view's table
    write_manifest(manifest, view_shards, cfg.to_dict(), summary, run_rejected, run_kept, table=table,
                   sample_format=read_manifest(manifest).get("sample_format", 1))  # bytes as they were
    fault_point("refilter_committed")
    _copy_table(out, table)  # the usual place, for people and scripts
    write_json_atomic(storage.child(out, "summary.json"), summary)
    storage.put_bytes(storage.child(out, "refilter.yaml"), config_yaml(cfg))
    for old in storage.ls(storage.join(out, VIEWS)):  # views the manifest no longer points at
        if storage.name(old) != tag:
            storage.remove(storage.join(old, TABLE))  # the table first: a view with a table is whole
            storage.remove(old)
    return summary


def _copy_table(out: Path | str, table: str) -> None:
    if storage.is_url(out):
        storage.put_bytes(storage.join(out, TABLE), storage.read_bytes(storage.join(out, table)))
        return
    with atomic_path(out / TABLE) as tmp:
        shutil.copyfile(out / table, tmp)


def _summary(manifest: Path | str, entries: dict[str, dict], kept: list[str], lost: int,
             stamp: dict) -> dict[str, Any]:
    summary = read_manifest(manifest).get("stats", {})
    reasons = Counter(e["reason"] for e in entries.values() if e["fate"] == "rejected")
    summary.update(pairs_written=len(kept), rejections=dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
                   refilter={**stamp, "kept": len(kept), "would_pass_without_bytes": lost})
    return summary
