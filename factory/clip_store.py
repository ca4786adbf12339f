"""The clip store: ingested clips, kept apart from pair-making so pairs can be made many times.

    ROOT/ingest-<hash>/          one folder per ingest configuration (the hash of its settings)
        config.yaml              the ingest settings that made these clips
        clips/KEY.npz            aligned crops, landmarks, transforms, audio (factory.clips)
        clips/KEY.occlusion-<tag>.npz   occluder masks, by the occlusion settings that made them
        videos/VIDEO_KEY.json    the store's ledger: one file per finished video, written
                                 atomically, listing its clips and rejections

A video with a ledger file is done: a rerun (or another pair-making round) reads it instead of
decoding again. Clips made with other settings go to another folder, so they never mix.

ROOT may be a URL (`s3://bucket/clips`): every file above is then one object written in one PUT
(factory.storage), so a ledger is as atomic as its local rename, and ingest workers put their
clips there directly. `path`, `clip_dir` and `video_dir` are Paths for a local store (as before
URLs) and URL strings for a remote one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from factory import storage
from factory.config import ConfigError, differences, digest
from factory.files import atomic_write
from factory.records import Record

CONFIG = "config.yaml"


@dataclass(frozen=True)
class ClipStore:
    path: Path | str  # a local folder (Path) or a URL (str)

    @classmethod
    def for_settings(cls, root: str | Path, identity: dict[str, Any]) -> "ClipStore":
        """The store for these ingest settings under `root` (a folder or a URL), created if new."""
        store = cls(cls.path_for(root, identity))
        config = storage.child(store.path, CONFIG)
        if storage.exists(config):
            saved = yaml.safe_load(storage.read_text(config)) or {}
            changed = differences(saved, identity)
            if changed:  # a hash collision or a hand-edited folder: never mix
                raise ConfigError(f"clip store {storage.redact(store.path)} was made with other settings: "
                                  f"{'; '.join(changed)}")
        elif storage.is_url(store.path):  # object storage has no folders to make: one PUT
            storage.put_bytes(config, yaml.safe_dump(identity, sort_keys=True))
        else:
            store.clip_dir.mkdir(parents=True, exist_ok=True)
            store.video_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(config, yaml.safe_dump(identity, sort_keys=True))
        return store

    @staticmethod
    def path_for(root: str | Path, identity: dict[str, Any]) -> Path | str:
        """Where the store for these settings lives (nothing is created): a Path under a local
        root, a URL under a URL."""
        return storage.child(root, f"ingest-{digest(identity)[:12]}")

    @classmethod
    def open(cls, path: str | Path) -> "ClipStore":
        store = cls(storage.as_path(path))
        if not storage.isfile(storage.child(store.path, CONFIG)):
            raise ConfigError(f"{storage.redact(path)} is not a clip store (no {CONFIG}); "
                              "make one with `factory ingest`")
        return store

    @property
    def clip_dir(self) -> Path | str:
        return storage.child(self.path, "clips")

    @property
    def video_dir(self) -> Path | str:
        return storage.child(self.path, "videos")

    @property
    def id(self) -> str:
        return storage.name(self.path)

    def settings(self) -> dict[str, Any]:
        return yaml.safe_load(storage.read_text(storage.child(self.path, CONFIG))) or {}

    def clip_path(self, clip_key: str) -> Path | str:
        """Where a clip's arrays live (factory.clips.save_clip writes them)."""
        return storage.child(self.clip_dir, f"{clip_key}.npz")

    def video_path(self, video_key: str) -> Path | str:
        return storage.child(self.video_dir, f"{video_key}.json")

    def is_done(self, video_key: str) -> bool:
        return storage.exists(self.video_path(video_key))

    def record_video(self, video_key: str, records: list[Record]) -> None:
        """A video is done: its clips (meta only; arrays are in clips/) and rejections. One
        atomic write: a rename locally, one PUT on object storage."""
        rows = [{"key": r.key, "kind": r.kind, "meta": r.meta} for r in records]
        if storage.is_url(self.path):
            storage.put_bytes(self.video_path(video_key), json.dumps(rows))
        else:
            atomic_write(self.video_path(video_key), json.dumps(rows))

    def video_records(self, video_key: str) -> list[Record]:
        records = [Record(**row) for row in json.loads(storage.read_text(self.video_path(video_key)))]
        for r in records:  # clip files are found relative to the store, wherever it was moved (or uploaded)
            if "clip_path" in r.meta:
                r.meta["clip_path"] = str(storage.child(self.clip_dir, storage.name(r.meta["clip_path"])))
        return records

    def video_keys(self) -> list[str]:
        if not storage.is_url(self.path):
            return sorted(p.stem for p in self.video_dir.glob("*.json"))
        names = (storage.name(p) for p in storage.ls(self.video_dir))
        return sorted(n[:-len(".json")] for n in names if n.endswith(".json") and not n.startswith("."))

    def records(self, video_keys: list[str] | None = None) -> list[Record]:
        """Every recorded clip and rejection, for the given videos (default: all), in key order."""
        keys = self.video_keys() if video_keys is None else [k for k in video_keys if self.is_done(k)]
        return [r for key in keys for r in self.video_records(key)]
