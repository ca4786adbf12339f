"""Sync gate: is the visible face the one speaking, and in time?

Ingest measures each clip's audio-video offset and SyncNet confidence when `ingest.syncnet_path`
is set (factory/stages/ingest.py, factory/metrics/sync.py) and records them in the clip's meta
(`sync_conf`, `av_offset`: the offset found before ingest corrected it). This filter only reads
those numbers, so `factory refilter` can re-threshold them without a model. A voice-over, or a
listener's shot in a dialogue, has no offset at which the lips follow the audio: low confidence.
LatentSync keeps conf >= 3 and |offset| <= 6 (syncnet_python's scale). Clips ingested without a
SyncNet carry no scores and pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from factory.records import Record
from factory.stage import Filter, FilterConfig, FilterSpec


@dataclass
class SyncConfig(FilterConfig):
    min_sync_conf: float | None = 3.0  # Sync-C of the real clip (median - min distance over offsets)
    max_abs_offset: int | None = 6  # frames the audio was off before ingest shifted it


def sync_thresholds(cfg: SyncConfig) -> dict[str, tuple[str, float]]:
    rules = {"sync_conf": (">=", cfg.min_sync_conf), "abs_av_offset": ("<=", cfg.max_abs_offset)}
    return {name: rule for name, rule in rules.items() if rule[1] is not None}


class SyncFilter(Filter):
    name = "sync"

    def __init__(self, cfg: SyncConfig, soft: bool = False):
        super().__init__(sync_thresholds(cfg), cfg.resources, soft)

    def score(self, record: Record) -> dict[str, float]:
        meta = record.meta
        if meta.get("sync_conf") is None:
            return {}
        return {"sync_conf": float(meta["sync_conf"]), "av_offset": int(meta["av_offset"]),
                "abs_av_offset": abs(int(meta["av_offset"])), "sync_dist": float(meta.get("sync_dist", 0.0))}


SPEC = FilterSpec("sync", SyncConfig, SyncFilter, sync_thresholds)
