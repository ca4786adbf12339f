"""The pseudo-pair pipeline: videos -> clips -> (clip, alternative clip) -> pairs -> shards.

    ingest (per video, on workers) -> [occlusion masks (per clip, GPU)]
    -> pair (driver: needs all clips of a speaker)
    -> generate + mouth distance + encode (per pair, on workers) -> write (driver)

Every clip ends exactly once in the ledger, kept (in a committed shard) or rejected with a
reason; a rerun of the same command skips what the ledger already holds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from augment.stage import AugmentStage
from factory.config import FactoryConfig, save_config
from factory.faults import fault_point
from factory.inputs import discover_videos
from factory.model_paths import check_model_paths
from factory.pairing import make_pairs
from factory.records import Record
from factory.stage import Filter, Resources
from factory.stages.encode import EncodeStage
from factory.stages.generate import GenerateStage
from factory.stages.ingest import IngestStage
from factory.summary import summarise
from filters.identity import IdentityFilter
from filters.mouth_distance import MouthDistanceFilter
from manifests.format import write_json_atomic, write_manifest
from manifests.table import write_table
from manifests.writer import ShardSink, write_preview

log = logging.getLogger(__name__)


class NoInputError(RuntimeError):
    """Nothing readable to work on: the one input problem that fails the whole run."""


def pair_stages(cfg: FactoryConfig) -> list:
    cpu = Resources(num_cpus=cfg.generate.num_cpus, pool_size=cfg.generate.pool_size)
    stages: list = [GenerateStage(cfg.generate)]
    if cfg.filters.mouth_distance.enabled:
        stages.append(MouthDistanceFilter(cfg.filters.mouth_distance))
        stages[-1].resources = cpu
    if cfg.filters.identity.enabled:
        stages.append(IdentityFilter(cfg.filters.identity))
    if cfg.filters.vlm_quality.enabled:
        from filters.vlm_quality import VLMQualityFilter

        stages.append(VLMQualityFilter(cfg.filters.vlm_quality))
    for stage in stages:
        if isinstance(stage, Filter):
            stage.soft = cfg.write.keep_rejected
    if cfg.augment.share > 0:
        stages.append(AugmentStage(cfg.augment, cfg.seed, cpu))
    stages.append(EncodeStage(cfg.hash(), cfg.ingest.fps, cfg.ingest.sample_rate, cfg.write.video_crf, cpu))
    return stages


def run(cfg: FactoryConfig, executor, progress: bool = True) -> dict[str, Any]:
    start = time.monotonic()
    check_model_paths(cfg)  # bad stage settings (missing weights, unknown backend) fail before any work
    pair_stages(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")

    demo = []
    if cfg.input.demo:
        from factory.demo import make_demo_videos

        demo = make_demo_videos(out / "demo_input", seed=cfg.seed)
    videos, skipped = discover_videos(cfg.input, demo)
    if not any(not v.rejected for v in videos):
        raise NoInputError(f"no readable input among input.paths={cfg.input.paths!r}")

    sink = ShardSink(out, cfg.write.shard_maxcount, cfg.write.shard_maxsize)
    previews = len(list((out / "previews").glob("*.jpg"))) if (out / "previews").exists() else 0
    try:
        for video in videos:
            if video.rejected:
                sink.reject(video)
        clips = _ingest(cfg, executor, [v for v in videos if not v.rejected], sink, out, progress)
        if cfg.occlusion.enabled:
            clips = _occlusion_masks(cfg, executor, clips, sink, progress)
        todo = []
        for pair in make_pairs(clips, cfg.pair):
            if sink.done(pair.key):
                continue
            if pair.rejected:
                sink.reject(pair)
            else:
                todo.append(pair)
        bar = tqdm(total=len(todo), desc="pairs", unit="pair", disable=not progress)
        for record in executor.map(pair_stages(cfg), todo):
            if record.rejected:
                sink.reject(record)
            else:
                if previews < cfg.write.previews and not record.filtered:
                    write_preview(out, record.key, record.media["preview"])
                    previews += 1
                sink.write(record)
            bar.update(1)
        bar.close()
    finally:
        sink.close()

    entries = list(sink.ledger.entries.values())
    summary = summarise(entries, len(videos), time.monotonic() - start, sink.written,
                        cfg.ingest.clip_frames, skipped, executor.failures)
    fault_point("manifest")
    kept_shards, rejected_shards = sink.shard_lists()
    write_manifest(out / "manifest.json", kept_shards, cfg.to_dict(), summary, rejected_shards)
    write_table(out / "samples.parquet", entries)
    write_json_atomic(out / "summary.json", summary)
    return summary


def _ingest(cfg: FactoryConfig, executor, videos: list[Record], sink: ShardSink, out: Path,
            progress: bool) -> list[Record]:
    stage = IngestStage(cfg.ingest, out / "work" / "clips")
    clips: list[Record] = []
    bar = tqdm(desc="ingest", unit="clip", disable=not progress)
    for record in executor.map([stage], videos):
        if record.rejected:
            sink.reject(record)
        else:
            clips.append(record)
        bar.update(1)
    bar.close()
    return clips


def _occlusion_masks(cfg: FactoryConfig, executor, clips: list[Record], sink: ShardSink,
                     progress: bool) -> list[Record]:
    from factory.model_paths import occlusion_vlm_path
    from factory.stages.occlusion import OcclusionStage

    key = "occlusion.vlm_path" if cfg.occlusion.vlm_path else "filters.vlm_quality.model_path"
    stage = OcclusionStage(cfg.occlusion, occlusion_vlm_path(cfg), key, cfg.filters.vlm_quality.max_pixels)
    # a clip rejected here in an earlier attempt stays out: neither a real side nor an alternative
    todo = [c for c in clips if sink.ledger.entries.get(c.key, {}).get("kind") != "clip"]
    kept: list[Record] = []
    for record in tqdm(executor.map([stage], todo), total=len(todo), desc="occlusion", unit="clip",
                       disable=not progress):
        if record.rejected:
            sink.reject(record)
        else:
            kept.append(record)
    return kept
