"""The one record type that flows through every stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Record:
    """A unit of work: a video, a clip or a pair.

    `media` holds a pair's arrays (a `factory.payload.PairMedia`; None for videos and clips, whose
    arrays stay in the clip store); `meta` holds JSON-able facts (provenance,
    scores). A record that a stage rejects keeps flowing, with `meta["rejected"]` set, so the
    writer can record its fate: nothing is ever dropped silently.
    """

    key: str
    kind: str  # "video" | "clip" | "pair"
    media: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def fate(self) -> tuple[str, str | None, str | None]:
        return fate_of(self.meta)

    @property
    def rejected(self) -> str | None:
        return self.meta.get("rejected")

    @property
    def filtered(self) -> str | None:
        """A threshold failure kept for re-filtering: written to rejected shards, not trained on."""
        return None if self.rejected else self.meta.get("filtered")

    def reject(self, reason: str, stage: str | None = None) -> "Record":
        self.meta["rejected"] = reason
        if stage:
            self.meta["rejected_by"] = stage
        self.media = None  # a rejected record carries no heavy payload downstream
        return self


def fate_of(meta: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(fate, reason, stage): "kept", or "rejected" with why and by whom. A threshold failure set
    aside for refilter (`filtered`) is a rejection too; the one place fate is read from a record."""
    if meta.get("rejected"):
        return "rejected", meta["rejected"], meta.get("rejected_by")
    if meta.get("filtered"):
        return "rejected", meta["filtered"], meta.get("filtered_by")
    return "kept", None, None
