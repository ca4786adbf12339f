"""The per-sample table (Parquet): every clip's fate, kept or rejected and why (`reason`, and in
`detail` the numbers behind it), with its scores, so a user can study or re-threshold a run
without regenerating it. Frames of a video that no clip used get rows too: kind `frames`, fate
`unused`, the frame range and why (ingest's `video_unused_frames`).

`path` may be an fsspec URL (factory/storage.py): the Parquet bytes are then built in memory and
written as one object (one PUT), and read back from the object's bytes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from factory import storage
from factory.files import atomic_path

COLUMNS = ["key", "kind", "fate", "reason", "detail", "stage", "shard", "source", "speaker", "video_key",
           "alt_key", "frame_start", "frame_end", "generator", "split"]


def row(entry: dict[str, Any]) -> dict[str, Any]:
    meta = entry.get("meta") or {}
    frames = meta.get("frame_range") or [None, None]
    out = {
        "key": entry["key"], "kind": entry.get("kind"), "fate": entry["fate"], "reason": entry.get("reason"),
        "detail": detail(entry),
        "stage": entry.get("stage"), "shard": entry.get("shard"), "source": meta.get("source"),
        "speaker": meta.get("speaker"), "video_key": meta.get("video_key"), "alt_key": meta.get("alt_key"),
        "frame_start": frames[0], "frame_end": frames[1], "generator": meta.get("generator"),
        "split": meta.get("split"),
    }
    for name, value in (meta.get("scores") or {}).items():
        out[f"score_{name}"] = float(value) if value is not None else None
    return out


THRESHOLD_REASON = re.compile(r"^(?P<score>.+)_(?P<side>below|above)_(?P<limit>[^_]+)$")


def detail(entry: dict[str, Any]) -> str | None:
    """The numbers behind a rejection: what the rejecting stage wrote (`reject_detail`), or for a
    threshold's reason (`<score>_below_<limit>`) the score that failed it."""
    if entry["fate"] != "rejected":
        return None
    meta = entry.get("meta") or {}
    if meta.get("reject_detail"):
        return str(meta["reject_detail"])
    found = THRESHOLD_REASON.match(entry.get("reason") or "")
    value = (meta.get("scores") or {}).get(found["score"]) if found else None
    if value is None:
        return None
    return f"{found['score']} = {float(value):.4g} {'<' if found['side'] == 'below' else '>'} {found['limit']}"


def unused_frame_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run of a video's frames that no clip used, with ingest's reason."""
    rows = []
    for entry in entries:
        meta = entry.get("meta") or {}
        for start, end, reason in meta.get("video_unused_frames") or []:
            rows.append({"key": f"{meta['video_key']}_f{start:06d}", "kind": "frames", "fate": "unused",
                         "reason": reason, "stage": "ingest", "source": meta.get("source"),
                         "speaker": meta.get("speaker"), "video_key": meta.get("video_key"),
                         "frame_start": start, "frame_end": end})
    return rows


def write_table(path: str | Path, entries: list[dict[str, Any]]) -> None:
    by_key = {r["key"]: r for r in [row(e) for e in entries] + unused_frame_rows(entries)}
    rows = [by_key[k] for k in sorted(by_key)]
    score_cols = sorted({c for r in rows for c in r if c.startswith("score_")})
    columns = {c: [r.get(c) for r in rows] for c in COLUMNS + score_cols}
    schema = pa.schema([(c, pa.float64() if c.startswith("score_") else
                         pa.int64() if c.startswith("frame_") else pa.string()) for c in columns])
    table = pa.table(columns, schema=schema)
    if storage.is_url(path):
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer)
        storage.put_bytes(path, buffer.getvalue().to_pybytes())
        return
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | Path) -> list[dict[str, Any]]:
    if storage.is_url(path):  # through fsspec (pyarrow's own filesystems know no memory://)
        return pq.read_table(pa.BufferReader(storage.read_bytes(path))).to_pylist()
    return pq.read_table(path).to_pylist()
