"""Find the input videos and give each a stable key and a speaker. An input path or the speaker
map may be a URL (`s3://bucket/videos`): a prefix is listed recursively like a folder."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from factory import storage
from factory.config import ConfigError
from factory.records import Record


@dataclass
class InputConfig:
    paths: list[str] = field(default_factory=list)  # video files or folders (searched recursively)
    demo: bool = False  # make the embedded demo videos (real face photo + espeak-ng speech) first
    speaker_map: str | None = None  # JSON {video path or stem: speaker id}; default speaker = video
    extensions: list[str] = field(default_factory=lambda: [".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"])


def video_key(path: Path | str) -> str:
    """Stable, unique, dot-free (WebDataset splits keys at dots): slug of the stem + path hash
    (of the resolved path; of a URL, its text)."""
    url = storage.is_url(path)
    stem = PurePosixPath(storage.name(path)).stem if url else Path(path).stem
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:40] or "video"
    where = str(path) if url else str(Path(path).resolve())
    digest = hashlib.sha1(where.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{slug}-{digest}"


def load_speaker_map(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    p = storage.as_path(path)
    if not storage.isfile(p):
        raise ConfigError(f"input.speaker_map file not found: {storage.redact(p)}")
    try:
        mapping = json.loads(storage.read_text(p))
    except ValueError as exc:
        raise ConfigError(f"input.speaker_map is not valid JSON: {exc}") from exc
    return {str(k): str(v) for k, v in mapping.items()}


def discover_videos(cfg: InputConfig, extra: list[Path] = ()) -> tuple[list[Record], int]:
    """Video records for every file given or found in a folder, plus the count of files skipped
    for their extension. A path that does not exist becomes a rejected record, not a crash."""
    speakers = load_speaker_map(cfg.speaker_map)
    exts = {e.lower() for e in cfg.extensions}
    files: list[Path | str] = []
    missing: list[Path | str] = []
    skipped = 0
    for raw in [*cfg.paths, *map(str, extra)]:
        if storage.is_url(raw):
            skipped += _discover_url(raw, exts, files, missing)
            continue
        path = Path(raw).expanduser()
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                if f.suffix.lower() in exts:
                    files.append(f)
                else:
                    skipped += 1
        elif path.is_file():
            files.append(path)  # named explicitly: tried whatever its extension
        else:
            missing.append(path)
    records, seen = [], set()
    for path in files + missing:
        key = video_key(path)
        if key in seen:
            continue
        seen.add(key)
        name = storage.name(path)
        speaker = speakers.get(str(path), speakers.get(name, speakers.get(PurePosixPath(name).stem, key)))
        record = Record(key=key, kind="video", meta={"source": str(path), "speaker": speaker})
        records.append(record.reject("missing_file", "inputs") if path in missing else record)
    return records, skipped


def _discover_url(url: str, exts: set[str], files: list, missing: list) -> int:
    """discover_videos for one URL, by the same rules as a local path: a prefix is searched
    recursively (dot files ignored, others by extension), an object named explicitly is tried
    whatever its extension, nothing there is missing. Returns the files skipped for their extension."""
    skipped = 0
    if storage.isdir(url):
        for f in storage.find(url):
            name = storage.name(f)
            if name.startswith("."):
                continue
            if PurePosixPath(name).suffix.lower() in exts:
                files.append(f)
            else:
                skipped += 1
    elif storage.isfile(url):
        files.append(url)
    else:
        missing.append(url)
    return skipped
