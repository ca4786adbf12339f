"""The per-sample table (Parquet): every clip's fate, kept or rejected and why, with its scores,
so a user can study or re-threshold a run without regenerating it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from factory.files import atomic_path

COLUMNS = ["key", "kind", "fate", "reason", "stage", "shard", "source", "speaker", "video_key",
           "alt_key", "frame_start", "frame_end", "generator", "split"]


def row(entry: dict[str, Any]) -> dict[str, Any]:
    meta = entry.get("meta") or {}
    frames = meta.get("frame_range") or [None, None]
    out = {
        "key": entry["key"], "kind": entry.get("kind"), "fate": entry["fate"], "reason": entry.get("reason"),
        "stage": entry.get("stage"), "shard": entry.get("shard"), "source": meta.get("source"),
        "speaker": meta.get("speaker"), "video_key": meta.get("video_key"), "alt_key": meta.get("alt_key"),
        "frame_start": frames[0], "frame_end": frames[1], "generator": meta.get("generator"),
        "split": meta.get("split"),
    }
    for name, value in (meta.get("scores") or {}).items():
        out[f"score_{name}"] = float(value) if value is not None else None
    return out


def write_table(path: Path, entries: list[dict[str, Any]]) -> None:
    rows = [row(e) for e in sorted(entries, key=lambda e: e["key"])]
    score_cols = sorted({c for r in rows for c in r if c.startswith("score_")})
    columns = {c: [r.get(c) for r in rows] for c in COLUMNS + score_cols}
    schema = pa.schema([(c, pa.float64() if c.startswith("score_") else
                         pa.int64() if c.startswith("frame_") else pa.string()) for c in columns])
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns, schema=schema), tmp)


def read_table(path: str | Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()
