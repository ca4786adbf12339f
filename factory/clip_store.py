"""The clip store: ingested clips, kept apart from pair-making so pairs can be made many times.

    ROOT/ingest-<hash>/          one folder per ingest configuration (the hash of its settings)
        config.yaml              the ingest settings that made these clips
        clips/KEY.npz            aligned crops, landmarks, transforms, audio (factory.clips)
        clips/KEY.occlusion-<tag>.npz   occluder masks, by the occlusion settings that made them
        videos/VIDEO_KEY.json    the store's ledger: one file per finished video, written
                                 atomically, listing its clips and rejections

A video with a ledger file is done: a rerun (or another pair-making round) reads it instead of
decoding again. Clips made with other settings go to another folder, so they never mix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from factory.config import ConfigError, differences, digest
from factory.files import atomic_write
from factory.records import Record

CONFIG = "config.yaml"


@dataclass(frozen=True)
class ClipStore:
    path: Path

    @classmethod
    def for_settings(cls, root: str | Path, identity: dict[str, Any]) -> "ClipStore":
        """The store for these ingest settings under `root`, created if new."""
        store = cls(cls.path_for(root, identity))
        config = store.path / CONFIG
        if config.exists():
            saved = yaml.safe_load(config.read_text()) or {}
            changed = differences(saved, identity)
            if changed:  # a hash collision or a hand-edited folder: never mix
                raise ConfigError(f"clip store {store.path} was made with other settings: {'; '.join(changed)}")
        else:
            store.clip_dir.mkdir(parents=True, exist_ok=True)
            store.video_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(config, yaml.safe_dump(identity, sort_keys=True))
        return store

    @staticmethod
    def path_for(root: str | Path, identity: dict[str, Any]) -> Path:
        """Where the store for these settings lives (nothing is created)."""
        return Path(root) / f"ingest-{digest(identity)[:12]}"

    @classmethod
    def open(cls, path: str | Path) -> "ClipStore":
        store = cls(Path(path))
        if not (store.path / CONFIG).is_file():
            raise ConfigError(f"{path} is not a clip store (no {CONFIG}); make one with `factory ingest`")
        return store

    @property
    def clip_dir(self) -> Path:
        return self.path / "clips"

    @property
    def video_dir(self) -> Path:
        return self.path / "videos"

    @property
    def id(self) -> str:
        return self.path.name

    def settings(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / CONFIG).read_text()) or {}

    def video_path(self, video_key: str) -> Path:
        return self.video_dir / f"{video_key}.json"

    def is_done(self, video_key: str) -> bool:
        return self.video_path(video_key).exists()

    def record_video(self, video_key: str, records: list[Record]) -> None:
        """A video is done: its clips (meta only; arrays are in clips/) and rejections."""
        rows = [{"key": r.key, "kind": r.kind, "meta": r.meta} for r in records]
        atomic_write(self.video_path(video_key), json.dumps(rows))

    def video_records(self, video_key: str) -> list[Record]:
        records = [Record(**row) for row in json.loads(self.video_path(video_key).read_text())]
        for r in records:  # clip files are found relative to the store, wherever it was moved
            if "clip_path" in r.meta:
                r.meta["clip_path"] = str(self.clip_dir / Path(r.meta["clip_path"]).name)
        return records

    def video_keys(self) -> list[str]:
        return sorted(p.stem for p in self.video_dir.glob("*.json"))

    def records(self, video_keys: list[str] | None = None) -> list[Record]:
        """Every recorded clip and rejection, for the given videos (default: all), in key order."""
        keys = self.video_keys() if video_keys is None else [k for k in video_keys if self.is_done(k)]
        return [r for key in keys for r in self.video_records(key)]
