"""`factory verify OUT`: check a run's output against its manifest and per-sample table.

Every listed shard (training, rejected and, after a refilter, source shards) must exist with the
manifest's size, md5 and sample count, read cleanly with webdataset and hold only safe member
names and, from sample format 2 on, every member a sample needs (manifests.sample); no key may
appear twice in the training shards; their keys and the table's kept keys must
be the same set; nothing half-written or unlisted may be left behind.

`out` may be an fsspec URL (`s3://bucket/run`, `memory://...`: factory/storage.py): the manifest,
table and shard objects are then read through fsspec, each shard in one streamed GET that both
hashes it and reads its members (no local copy). On object storage (manifests/object_commit.py)
there are no `.partial` files; a shard object under `shards/` that the manifest does not list is
an orphan of a killed attempt that no resume recovered: "shard not in the manifest".
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections import Counter
from pathlib import Path
from typing import IO, Iterator

import webdataset as wds
from webdataset.tariterators import group_by_keys

from factory import storage
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
    keys: list[str] = []
    for sample in wds.WebDataset(str(path), shardshuffle=False, empty_check=False):
        _note_sample(sample, path.name, required, keys, problems)
    return keys, problems


def _note_sample(sample: dict, name: str, required: frozenset[str], keys: list[str], problems: list[str]) -> None:
    """A sample's key, and the members it lacks (from sample format 2 on)."""
    keys.append(sample["__key__"])
    missing = sorted(required - set(sample))
    if missing:
        problems.append(f"{name}: sample {sample['__key__']!r} lacks {', '.join(missing)}")


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


# -- object storage: the same checks, through fsspec ---------------------------------------------

META = re.compile(r"__[^/]*__($|/)")  # names webdataset's tar_file_iterator skips


class _Hashing:
    """A read-only stream that hashes every byte it hands on (one GET: md5 and members together)."""

    def __init__(self, raw: IO[bytes]):
        self.raw, self.md5 = raw, hashlib.md5()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.md5.update(data)
        return data

    def hexdigest(self) -> str:
        while self.read(storage.CHUNK):  # the rest (tar padding, or what a failed read left)
            pass
        return self.md5.hexdigest()


def _stream_keys(stream: _Hashing, name: str, required: frozenset[str]) -> tuple[list[str], list[str]]:
    """_shard_keys of a tar read as a stream: member names checked as they pass, samples grouped
    by webdataset's own `group_by_keys` (so the keys are the ones training reads)."""
    problems: list[str] = []

    def files(tar: tarfile.TarFile) -> Iterator[dict]:
        for member in tar:
            if not safe_member(member.name) or not member.isfile():
                problems.append(f"{name}: unsafe member {member.name!r}")
            if member.isreg() and not META.match(member.name):
                yield {"fname": member.name, "data": tar.extractfile(member).read(), "__url__": name}
            tar.members = []  # a stream: keep no member list

    keys: list[str] = []
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for sample in group_by_keys(files(tar)):
            _note_sample(sample, name, required, keys, problems)
    return keys, problems


def _check_object(out: str, entry: dict, required: frozenset[str] = frozenset()) -> tuple[list[str], list[str]]:
    """_check_shard of a shard object under a URL."""
    url = storage.join(out, entry["url"])
    try:
        size = storage.size(url)  # one HEAD: the object's size, or that there is none
    except FileNotFoundError:
        return [], [f"{entry['url']}: missing"]
    problems = []
    if size != entry["filesize"]:
        problems.append(f"{entry['url']}: size {size} != manifest {entry['filesize']}")
    try:
        with storage.open_file(url, "rb") as raw:
            stream = _Hashing(raw)
            try:
                keys, member_problems = _stream_keys(stream, storage.name(url), required)
            except Exception as exc:  # any read failure is the finding, not a crash of verify
                keys, member_problems = None, [f"{entry['url']}: unreadable ({type(exc).__name__}: {exc})"]
            if stream.hexdigest() != entry["md5sum"]:
                problems.append(f"{entry['url']}: md5 differs from the manifest")
    except OSError as exc:  # gone or unreachable while verify read it
        return [], problems + [f"{entry['url']}: unreadable ({type(exc).__name__}: {exc})"]
    if keys is None:
        return [], problems + member_problems
    problems += member_problems
    if len(keys) != entry["nsamples"]:
        problems.append(f"{entry['url']}: {len(keys)} samples, manifest says {entry['nsamples']}")
    return keys, problems


def _object_strays(out: str, manifest: dict, listed: set[str]) -> list[str]:
    """_strays under a URL: shard objects (any name with `.tar` in it) the manifest does not list."""
    folders = [storage.join(out, "shards")] + sorted({storage.parent(u) for u in listed})
    problems = []
    for folder in dict.fromkeys(folders):
        for stray in storage.ls(folder):
            name = storage.name(stray)
            if ".tar" not in name or stray in listed:
                continue
            problems.append(f"{name}: half-written shard left behind" if name.endswith(PARTIAL)
                            else f"{name}: shard not in the manifest")
    return problems


# -- the whole output ------------------------------------------------------------------------------

def verify(out: str | Path) -> tuple[list[str], dict[str, int]]:
    """(problems, counts); no problems means the output is whole. `out`: a folder or a URL."""
    remote = storage.is_url(out)
    out = str(out).rstrip("/") if remote else storage.local(out)
    storage.forget_listings(out)  # other clients may have written since this process last looked
    problems: list[str] = []
    try:
        manifest = read_manifest(storage.join(out, "manifest.json") if remote else out / "manifest.json")
    except (OSError, ValueError) as exc:
        return [f"manifest unreadable: {exc}"], {}
    required = REQUIRED_MEMBERS if manifest.get("sample_format", 1) >= SAMPLE_FORMAT else frozenset()
    keys: Counter = Counter()  # the training set: shardlist only
    listed = set()
    for field in ("shardlist", "rejected_shardlist", "source_shardlist"):
        for entry in manifest.get(field, []):
            listed.add(storage.join(out, entry["url"]) if remote else (out / entry["url"]).resolve())
            shard_keys, shard_problems = (_check_object if remote else _check_shard)(out, entry, required)
            problems += shard_problems
            if field == "shardlist":
                keys.update(shard_keys)
    problems += [f"key {k!r} appears {n} times" for k, n in sorted(keys.items()) if n > 1]
    problems += (_object_strays if remote else _strays)(out, manifest, listed)
    try:
        table_name = manifest.get("table", "samples.parquet")
        table = read_table(storage.join(out, table_name) if remote else out / table_name)
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


TRACES = ("manifest.json", "shards", "state", "commits", "samples.parquet")  # what a run leaves, even a damaged one


def not_a_run(out: str | Path) -> str | None:
    """Why `out` (a folder or a URL) is no run's output at all, or None when there is something to
    check: nothing there is no input, not damage (`factory verify` says so and exits EXIT_NO_INPUT)."""
    if any(storage.exists(storage.join(out, name)) for name in TRACES):
        return None
    return "no such folder" if not storage.exists(out) else "no manifest.json in it"
