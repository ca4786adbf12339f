"""`factory verify OUT`: check a run's output against its manifest and per-sample table.

Every listed shard (training, rejected and, after a refilter, source shards) must exist with the
manifest's size, md5 and sample count, read cleanly with webdataset and hold only safe member
names and, from sample format 2 on, every member a sample needs (manifests.sample); no key may
appear twice in the training shards; their keys and the table's kept keys must
be the same set; nothing half-written or unlisted may be left behind.
"""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import webdataset as wds

from factory.files import file_digest
from manifests.format import read_manifest
from manifests.sample import REQUIRED_MEMBERS, SAMPLE_FORMAT
from manifests.table import read_table
from manifests.writer import PARTIAL, safe_member


def _shard_keys(path: Path, required: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
    """Sample keys as webdataset reads them, and any problems with the tar's member names or a
    sample's missing members."""
    problems = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if not safe_member(member.name) or not member.isfile():
                problems.append(f"{path.name}: unsafe member {member.name!r}")
    keys = []
    for sample in wds.WebDataset(str(path), shardshuffle=False, empty_check=False):
        keys.append(sample["__key__"])
        missing = sorted(required - set(sample))
        if missing:
            problems.append(f"{path.name}: sample {sample['__key__']!r} lacks {', '.join(missing)}")
    return keys, problems


def _check_shard(out: Path, entry: dict, required: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
    """(keys, problems) of one listed shard."""
    path = out / entry["url"]
    if not path.is_file():
        return [], [f"{entry['url']}: missing"]
    problems = []
    if path.stat().st_size != entry["filesize"]:
        problems.append(f"{entry['url']}: size {path.stat().st_size} != manifest {entry['filesize']}")
    if file_digest(path, "md5") != entry["md5sum"]:
        problems.append(f"{entry['url']}: md5 differs from the manifest")
    try:
        keys, member_problems = _shard_keys(path, required)
    except Exception as exc:  # any read failure is the finding, not a crash of verify
        return [], problems + [f"{entry['url']}: unreadable ({type(exc).__name__}: {exc})"]
    problems += member_problems
    if len(keys) != entry["nsamples"]:
        problems.append(f"{entry['url']}: {len(keys)} samples, manifest says {entry['nsamples']}")
    return keys, problems


def _strays(out: Path, manifest: dict, listed: set[Path]) -> list[str]:
    """Half-written or unlisted tars in the run's shard folders."""
    folders = [out / "shards"] + sorted({(out / e["url"]).parent for e in manifest["shardlist"]})
    problems = []
    for folder in dict.fromkeys(folders):
        for stray in sorted(folder.glob("*.tar*")) if folder.exists() else []:
            if stray.name.endswith(PARTIAL):
                problems.append(f"{stray.name}: half-written shard left behind")
            elif stray.resolve() not in listed:
                problems.append(f"{stray.name}: shard not in the manifest")
    return problems


def verify(out: str | Path) -> tuple[list[str], dict[str, int]]:
    """(problems, counts); no problems means the output is whole."""
    out = Path(out)
    problems: list[str] = []
    try:
        manifest = read_manifest(out / "manifest.json")
    except (OSError, ValueError) as exc:
        return [f"manifest unreadable: {exc}"], {}
    required = REQUIRED_MEMBERS if manifest.get("sample_format", 1) >= SAMPLE_FORMAT else frozenset()
    keys: Counter = Counter()  # the training set: shardlist only
    listed = set()
    for field in ("shardlist", "rejected_shardlist", "source_shardlist"):
        for entry in manifest.get(field, []):
            listed.add((out / entry["url"]).resolve())
            shard_keys, shard_problems = _check_shard(out, entry, required)
            problems += shard_problems
            if field == "shardlist":
                keys.update(shard_keys)
    problems += [f"key {k!r} appears {n} times" for k, n in sorted(keys.items()) if n > 1]
    problems += _strays(out, manifest, listed)
    try:
        table = read_table(out / manifest.get("table", "samples.parquet"))
    except Exception as exc:
        problems.append(f"{manifest.get('table', 'samples.parquet')} unreadable: {exc}")
        table = []
    kept = {r["key"] for r in table if r["fate"] == "kept"}
    if table:
        problems += [f"key {k!r} is in a shard but not kept in samples.parquet" for k in sorted(set(keys) - kept)]
        problems += [f"key {k!r} is kept in samples.parquet but in no shard" for k in sorted(kept - set(keys))]
        problems += [f"key {r['key']!r} rejected without a reason" for r in table
                     if r["fate"] == "rejected" and not r["reason"]]
    if manifest.get("stats", {}).get("pairs_written") not in (None, sum(keys.values())):
        problems.append(f"manifest stats say {manifest['stats']['pairs_written']} pairs, shards hold "
                        f"{sum(keys.values())}")
    return problems, {"shards": len(manifest["shardlist"]), "samples": sum(keys.values()), "table_rows": len(table)}
