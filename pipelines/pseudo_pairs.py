"""The pseudo-pair pipeline: clip store(s) -> (clip, alternative clip) -> pairs -> shards.

    [occlusion masks (per clip, GPU)] -> pair (driver: needs all clips of a speaker)
    -> generate -> track -> filters -> augment -> encode (per pair, on workers) -> write (driver)

`factory pairs` reads existing clip stores; `factory run` ingests first (pipelines/ingest.py).
Every clip ends exactly once in the ledger, kept (in a committed shard) or rejected with a
reason; a rerun of the same command skips what the ledger already holds. An output folder holds
one configuration: a rerun whose settings would shape samples differently is refused.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tqdm import tqdm

from augment.stage import AugmentStage
from factory import storage
from factory.clip_store import ClipStore
from factory.config import ConfigError, config_yaml, differences, digest
from factory.duplicates import held_out, reject_duplicates
from factory.faults import fault_point
from factory.out_lock import holds_output
from factory.identity_clusters import assign_speakers
from factory.pairing import make_pairs
from factory.payload import check_contracts
from factory.previews import write_preview
from factory.records import Record
from factory.stage import Stage
from factory.stages.encode import EncodeStage
from factory.stages.generate import GenerateStage
from factory.stages.track import TrackStage
from factory.summary import summarise
from manifests.verify import verify
from filters.registry import enabled_filters
from manifests.format import write_json_atomic
from manifests.sinks import open_sink
from manifests.table import write_table
from manifests.writer import ShardSink
from pipelines.ingest import NoInputError, clip_store_for, clip_store_id, find_videos, ingest  # noqa: F401  (NoInputError: CLI)
from pipelines.model_paths import check_model_paths
from pipelines.settings import FactoryConfig, pairs_identity

IDENTITY = "state/identity.json"
TIMELINE = "state/timeline.json"  # this run's records per stage over time


def pair_stages(cfg: FactoryConfig, config_hash: str = "") -> list[Stage]:
    """The per-pair stages, checked: a stage whose input no earlier stage provides fails here."""
    soft = cfg.write.keep_rejected  # failing pairs are set aside in rejected shards, for refilter
    stages: list[Stage] = [GenerateStage(cfg.generate, cfg.seed), TrackStage(cfg.track)]
    stages += [spec.build(settings, soft=soft) for spec, settings in enabled_filters(cfg.filters)]
    if cfg.augment.share > 0:
        stages.append(AugmentStage(cfg.augment, cfg.seed))
    stages.append(EncodeStage(config_hash, cfg.write.video_crf, cfg.write.resources))
    check_contracts(stages)
    return stages


def claim_output(out: str, identity: dict[str, Any]) -> str:
    """Make `out` (a folder or a URL prefix) this configuration's, or refuse if it holds another
    one's samples. Returns the configuration's hash (recorded in every sample's meta.json)."""
    path = storage.join(out, IDENTITY)
    if storage.exists(path):
        changed = differences(json.loads(storage.read_text(path)), identity)
        if changed:
            raise ConfigError(
                f"{out} holds a run made with other settings; rerunning there would mix the two in one output. "
                f"Differences: {'; '.join(changed[:8])}{' ...' if len(changed) > 8 else ''}. "
                "Use a new out=..., or delete the folder.")
    else:
        storage.put_bytes(path, json.dumps(identity, sort_keys=True, indent=1))
    return digest(identity)


@holds_output  # one process per output folder
def run(cfg: FactoryConfig, executor, progress: bool = True) -> dict[str, Any]:
    """`factory run`: ingest the input into its clip store, then make pairs from those clips."""
    start = time.monotonic()
    check_model_paths(cfg)  # bad stage settings (missing weights, unknown backend) fail before any work
    out = cfg.out
    # claimed before the store is made: a run refused for other settings leaves out as it was
    config_hash = claim_output(out, {**pairs_identity(cfg), "clip_stores": [clip_store_id(cfg)]})
    store = clip_store_for(cfg)
    stages = pair_stages(cfg, config_hash)  # contracts checked before any work
    storage.put_bytes(storage.join(out, "config.yaml"), config_yaml(cfg))
    videos, skipped = find_videos(cfg, out)
    sink = open_sink(out, cfg.write)
    try:
        for video in videos:
            if video.rejected:
                sink.reject(video)
        clips = ingest(cfg, executor, store, videos, progress)
        written = make_shards(cfg, executor, clips, sink, stages, progress)
    finally:
        sink.close()
    return finish(cfg, executor, sink, out, len(videos), skipped, written, start)


@holds_output
def run_pairs(cfg: FactoryConfig, executor, progress: bool = True) -> dict[str, Any]:
    """`factory pairs`: make pairs from existing clip stores (`clip_stores=[...]`), no ingest."""
    start = time.monotonic()
    if not cfg.clip_stores:
        raise ConfigError("factory pairs needs clip_stores=[PATH, ...] (folders written by `factory ingest`)")
    check_model_paths(cfg)
    stores = [ClipStore.open(p) for p in cfg.clip_stores]
    out = cfg.out
    identity = {**pairs_identity(cfg), "clip_stores": sorted(s.id for s in stores)}
    for name in ("ingest", "input"):  # the stores' own settings stand for these
        identity.pop(name, None)
    config_hash = claim_output(out, identity)
    stages = pair_stages(cfg, config_hash)
    storage.put_bytes(storage.join(out, "config.yaml"), config_yaml(cfg))
    records = [r for store in stores for r in store.records()]
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):
        raise ConfigError("the clip stores hold the same videos twice (made with different ingest settings?): "
                          "pass one store per video")
    if not records:
        raise NoInputError(f"the clip stores hold no videos: {cfg.clip_stores}")
    sink = open_sink(out, cfg.write)
    try:
        written = make_shards(cfg, executor, records, sink, stages, progress)
    finally:
        sink.close()
    videos = {r.meta.get("video_key", r.key) for r in records}
    return finish(cfg, executor, sink, out, len(videos), 0, written, start)


def make_shards(cfg: FactoryConfig, executor, records: list[Record], sink: ShardSink, stages: list[Stage],
                progress: bool) -> int:
    """Clip records (and their videos' rejections) in, shards out. Returns pairs written now."""
    clips = drain(executor, [], records, sink, "clips", progress)
    clips = drain(executor, [], reject_duplicates(clips), sink, "duplicates", progress)  # first copy kept
    if cfg.occlusion.enabled:
        clips = drain(executor, [occlusion_stage(cfg)], _not_yet_rejected(clips, sink), sink, "occlusion", progress)
    clips = assign_speakers(clips, cfg.pair.speakers, cfg.pair.speaker_csim)
    heldout = held_out(clips, {}, cfg.pair.heldout_share, cfg.seed)  # whole speakers: no person on both sides
    for clip in clips:
        clip.meta["split"] = "heldout" if clip.key in heldout else "train"
    by_key = {c.key: c for c in clips}
    todo = []
    for pair in make_pairs(clips, cfg.pair, cfg.seed):
        if sink.done(pair.key):
            continue
        if not pair.rejected:  # whose lower face is pasted in: for the alt_identity filter
            pair.meta["alt_identity"] = by_key[pair.meta["alt_key"]].meta.get("identity")
        if pair.rejected:
            sink.reject(pair)
        else:
            todo.append(pair)
    previews = len(storage.glob(storage.join(cfg.out, "previews", "*.jpg")))
    written_before = sink.written
    for record in tqdm(executor.map(stages, todo), total=len(todo), desc="pairs",
                       unit="pair", disable=not progress):
        if record.rejected:
            sink.reject(record)
            continue
        if previews < cfg.write.previews and not record.filtered:
            write_preview(cfg.out, record.key, record.media.preview)
            previews += 1
        sink.write(record)
    return sink.written - written_before


def drain(executor, stages: list[Stage], records: list[Record], sink: ShardSink, desc: str,
          progress: bool) -> list[Record]:
    """Run records through stages (none: as they are); rejections go to the ledger, the rest back."""
    kept: list[Record] = []
    stream = executor.map(stages, records) if stages else iter(records)
    for record in tqdm(stream, total=len(records), desc=desc, unit="clip", disable=not progress or not stages):
        if record.rejected:
            sink.reject(record)
        else:
            kept.append(record)
    return kept


def _not_yet_rejected(clips: list[Record], sink: ShardSink) -> list[Record]:
    """A clip rejected in an earlier attempt stays out: neither a real side nor an alternative."""
    return [c for c in clips if (sink.entry(c.key) or {}).get("kind") != "clip"]


def occlusion_stage(cfg: FactoryConfig):
    from factory.stages.occlusion import OcclusionStage
    from pipelines.model_paths import occlusion_vlm_key, occlusion_vlm_path

    return OcclusionStage(cfg.occlusion, occlusion_vlm_path(cfg), occlusion_vlm_key(cfg),
                          cfg.filters.vlm_quality.max_pixels)


def finish(cfg: FactoryConfig, executor, sink: ShardSink, out: str, videos_in: int, skipped: int,
           written: int, start: float) -> dict[str, Any]:
    entries = sink.entries()
    summary = summarise(entries, videos_in, time.monotonic() - start, written, cfg.ingest.clip_frames,
                        skipped, executor.failures, executor.stage_stats())
    fault_point("manifest")
    write_table(storage.join(out, "samples.parquet"), entries)
    sink.write_manifest(cfg.to_dict(), summary)  # last: readers follow the manifest only
    if sink.repaired:
        summary["shards_repaired"] = sink.repaired
    # what is on disk must be what the summary says: checked, not assumed (exit 1 otherwise)
    summary["verify_problems"] = verify(out)[0]
    write_json_atomic(storage.join(out, "summary.json"), summary)
    if hasattr(executor, "timeline"):  # throughput over time, for `factory report`
        write_json_atomic(storage.join(out, TIMELINE), executor.timeline())
    return summary
