"""The ingest pipeline: videos -> a clip store (`factory ingest`, and the first half of `factory run`).

One video per task on the executor (IngestStage); each finished video is recorded in the store's
ledger, so a rerun, or any later pair-making round, reuses the clips without decoding again.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from factory import storage
from factory.clip_store import ClipStore
from factory.config import ConfigError
from factory.inputs import discover_videos
from factory.out_lock import hold_output
from factory.records import Record
from factory.stages.ingest import IngestStage
from pipelines.settings import FactoryConfig, ingest_identity


class NoInputError(RuntimeError):
    """Nothing readable to work on: the one input problem that fails the whole run."""


def find_videos(cfg: FactoryConfig, out: str) -> tuple[list[Record], int]:
    """Video records (unreadable paths already rejected) and the count of files skipped."""
    demo = demo_videos(cfg, out) if cfg.input.demo else []
    videos, skipped = discover_videos(cfg.input, demo)
    if not any(not v.rejected for v in videos):
        raise NoInputError(f"no input to read: {why_no_input(cfg)}")
    return videos, skipped


def demo_videos(cfg: FactoryConfig, out: str) -> list[str]:
    """The embedded demo's videos in OUT/demo_input. On object storage they are made locally and
    uploaded (one object each, skipped when there), so every worker reads them from the URL."""
    from factory.demo import make_demo_videos

    if not storage.is_url(out):
        return [str(p) for p in make_demo_videos(storage.local(out) / "demo_input", seed=cfg.seed)]
    with tempfile.TemporaryDirectory(prefix="factory-demo-") as tmp:
        urls = []
        for path in make_demo_videos(Path(tmp), seed=cfg.seed):
            url = storage.join(out, "demo_input", path.name)
            if not storage.exists(url):
                storage.upload(path, url)
            urls.append(url)
    return urls


def why_no_input(cfg: FactoryConfig) -> str:
    """What each input path turned out to be, in one line: missing, empty, or no videos in it."""
    if not cfg.input.paths:
        return "input.paths is empty (set input.paths=[FILE_OR_FOLDER, ...], or input.demo=true)"
    told = []
    for raw in cfg.input.paths:
        if storage.is_url(raw):
            told.append(f"{storage.redact(raw)} " + ("holds no videos" if storage.exists(raw) else "does not exist"))
            continue
        path = Path(raw).expanduser()
        if not path.exists():
            told.append(f"{raw} does not exist")
        elif not path.is_dir():
            told.append(f"{raw} is not a file or folder")
        else:
            files = sum(1 for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            told.append(f"{raw} is an empty folder" if not files else
                        f"{raw} holds {files} file(s), none ending in {' '.join(cfg.input.extensions)} "
                        "(input.extensions)")
    return "; ".join(told)


def clip_store_for(cfg: FactoryConfig) -> ClipStore:
    return ClipStore.for_settings(cfg.clip_store_root(), ingest_identity(cfg))


def clip_store_id(cfg: FactoryConfig) -> str:
    """The id of clip_store_for(cfg), without creating the store (a refused run makes none)."""
    return storage.name(ClipStore.path_for(cfg.clip_store_root(), ingest_identity(cfg)))


def ingest(cfg: FactoryConfig, executor, store: ClipStore, videos: list[Record], progress: bool = True) -> list[Record]:
    """Every clip and rejection of the readable videos, from the store or freshly ingested."""
    todo = [v for v in videos if not v.rejected and not store.is_done(v.key)]
    records = [r for v in videos if not v.rejected and store.is_done(v.key) for r in store.video_records(v.key)]
    bar = tqdm(desc="ingest", total=len(todo), unit="video", disable=not progress)
    seen, made = set(), 0  # a video's records arrive together: its first one means it is done
    for record in executor.map([IngestStage(cfg.ingest, store)], todo):
        records.append(record)
        made += record.kind == "clip" and not record.rejected
        video = record.meta.get("video_key", record.key)
        if video not in seen:
            seen.add(video)
            bar.update(1)
        bar.set_postfix(clips=made, refresh=False)
    bar.close()
    return sorted(records, key=lambda r: r.key)


def run_ingest(cfg: FactoryConfig, executor, progress: bool = True) -> dict[str, Any]:
    """`factory ingest`: fill the clip store for cfg.ingest and report what it holds."""
    if cfg.input.demo or not cfg.clip_store:  # it writes under out (demo input, OUT/clips): hold it
        with hold_output(cfg.out):
            return _ingest_command(cfg, executor, progress)
    return _ingest_command(cfg, executor, progress)


def _ingest_command(cfg: FactoryConfig, executor, progress: bool) -> dict[str, Any]:
    start = time.monotonic()
    if cfg.ingest.syncnet_path is not None and not Path(cfg.ingest.syncnet_path).exists():
        raise ConfigError(f"model weights missing (nothing is downloaded): ingest.syncnet_path = "
                          f"{cfg.ingest.syncnet_path!r} is not an existing local file or folder")
    videos, skipped = find_videos(cfg, cfg.out)
    store = clip_store_for(cfg)
    records = ingest(cfg, executor, store, videos, progress)
    latest = {r.key: r for r in videos + records}  # a video rejected in ingest is in both (local executor: one object)
    reasons = Counter(r.rejected for r in latest.values() if r.rejected)
    return {"clip_store": str(store.path), "videos_in": len(videos),
            "clips": sum(1 for r in records if r.kind == "clip" and not r.rejected),
            "rejections": dict(reasons.most_common()), "files_skipped_by_extension": skipped,
            "wall_s": round(time.monotonic() - start, 2)}
