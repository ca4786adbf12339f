"""The pair dataset of the mask-free dubbers (issue 14): the factory's shards streamed with
webdataset, each pair cut into segments, as the clip dataset's batch (clip_data.py) plus the
synthetic side. X-Dub's convention: input = `synthetic` + real `audio`, target = `target` (real).

Read top to bottom: 1. settings, 2. the index (one row per pair of every manifest: shard, key,
video, frames, scores; which pairs this split and `min_scores` keep), 3. the plan (which shards,
in which order, each epoch of one rank), 4. the stream (webdataset over the plan, segments, a
seeded shuffle buffer, positions), 5. one segment (decoded with manifests.reader), 6. the loader.

The index comes from each manifest's per-sample table (`samples.parquet`: scores, video key,
shard, frame range of every written pair) when it has one, else from one pass over the shards'
`meta.json`. Knowing every pair before streaming is what makes the rest exact and cheap: the
held-out split is by source video (clip_sources.video_split, never by frame), a threshold's
skips are counted for the whole split up front (`dataset.skipped`, logged), every rank knows
every rank's share, and a position maps to (epoch, offset) without reading a byte.

Ranks: with at least as many shards (holding kept pairs) as ranks, rank r reads the shards
r, r + n, ... (webdataset's split_by_node, with the rank given: Ray's, not torch.distributed's);
with fewer, every rank reads every shard and keeps the kept pairs r, r + n, ... of the epoch's
common order, so no rank is left empty (fewer kept pairs than ranks is an error). Workers do not
split shards (webdataset's split_by_worker would make the order depend on the worker count and
starve workers when shards are few): every loader worker streams its rank's bytes and decodes
only its own batches (worker w the batches w, w + n, ...), the order DataLoader returns them in,
so the batches are the same with any number of workers, as in ClipDataset.

Order and resume: epoch e of rank r is a seeded permutation of its shards (`resample`: shards
drawn with replacement, webdataset's ResampledShards), their pairs through a shuffle buffer of
`shuffle_buffer` raw pairs, each cut into its segments, through a second buffer of
`segment_shuffle` segments (both seeded by (seed, epoch, rank)): a pair's segments stay close,
so each process's small cache of decoded pairs decodes most pairs once. Several manifests
with `weights` are mixed by a seeded choice per position (each manifest its own stream), without
weights their shards form one pool. A position is a count of segments this rank has consumed;
`start_at(p)` finds p's epoch from the index and replays that epoch's raw bytes through the buffer
up to p, decoding nothing. The held-out split streams once, in manifest order, unshuffled.

Manifests and shards may be URLs (`s3://bucket/run`, factory/storage.py): the index, the table
and the shards' bytes are read through fsspec (manifests.reader.tar_samples), local paths as before.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import webdataset as wds

from factory import storage
from factory.config import ConfigError, digest
from factory.trainers.clip_data import (SAMPLES_PER_FRAME, collate, face_mask, lip_mask, mouth_landmarks,
                                        resize_frames, segment_audio_features, video_tensor)
from factory.trainers.clip_sources import video_split
from manifests.format import read_manifest
from manifests.reader import decode_sample, shard_samples, shard_urls, tar_samples, with_augmentation

log = logging.getLogger(__name__)

# per process, the decoded pairs kept (at `resolution`): ~36 MB a 77-frame pair at 256 px (10 pairs),
# ~0.5 MB at 32 px (hundreds). A pair's segments wait in the segment shuffle buffer for a while:
# with 6 pairs at 256 px 1.25 decodes a pair (not 3, 77/25), with 10 about 1.1
DECODED_BYTES = 384 * 2**20
MIX_BLOCK = 4096  # mixing choices are drawn in seeded blocks, so position p's choices need no replay


# 1. settings --------------------------------------------------------------------------------

@dataclass
class PairDataConfig:
    # manifest JSON paths or run folders (wids-shard-index-v1), local or URLs (s3://bucket/run)
    manifests: list[str] = field(default_factory=list)
    weights: list[float] | None = None  # mixing weights, one per manifest (null: one pool of all shards)
    resolution: int = 256  # frames and masks are resized to this square side
    segment_frames: int = 25  # T: 4k + 1 (the Wan VAE)
    segment_stride: int | None = None  # frames between segment starts in a pair (null: segment_frames)
    motion_frames: int = 5  # M real frames before the segment
    reference_frames: int = 4  # N real frames of the same clip outside the segment
    heldout_share: float = 0.1  # share of source videos held out (by video, never by frame)
    # thresholds on the pair's recorded scores (meta.json "scores"), e.g. {csim: 0.9, lmd: 1.5}: a
    # pair below one, or without that score, is skipped and counted. Typed Any with a None default
    # (made {} after construction): the config loader refuses free keys in a typed or non-empty dict
    min_scores: Any = None
    shuffle_buffer: int = 64  # pairs (raw bytes, nothing decoded) in the first shuffle buffer
    segment_shuffle: int = 8  # segments in the second, which mixes the segments of neighbouring pairs
    resample: bool = False  # draw shards with replacement each epoch (webdataset ResampledShards)
    augment: bool = True  # replay each pair's recorded augmentation (the same on both sides)
    check_shards: bool = True  # compare each shard's size and md5 with its manifest first
    lip_mask_dilation: int = 2  # pixels (at `resolution`) around the outer lip hull
    seed: int = 0

    def __post_init__(self):
        if self.min_scores is None:
            self.min_scores = {}


def check_config(cfg: PairDataConfig, prefix: str = "") -> None:
    if not cfg.manifests:
        raise ConfigError(f"config key '{prefix}manifests' is empty: give manifest.json files or run folders "
                          "written by `factory run`")
    if cfg.weights is not None and (len(cfg.weights) != len(cfg.manifests) or min(cfg.weights) < 0
                                    or sum(cfg.weights) <= 0):
        raise ConfigError(f"config key '{prefix}weights' must give one weight >= 0 per manifest "
                          f"({len(cfg.manifests)}), not all 0; got {cfg.weights}")
    if (cfg.segment_frames - 1) % 4 or cfg.segment_frames < 1:
        raise ConfigError(f"config key '{prefix}segment_frames' must be 4k + 1 (the Wan VAE), not {cfg.segment_frames}")
    for name in ("motion_frames", "reference_frames", "shuffle_buffer", "segment_shuffle"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"config key '{prefix}{name}' must be >= 0")
    if cfg.segment_stride is not None and cfg.segment_stride < 1:
        raise ConfigError(f"config key '{prefix}segment_stride' must be >= 1")
    if cfg.resolution < 8:
        raise ConfigError(f"config key '{prefix}resolution' must be >= 8")
    if not isinstance(cfg.min_scores, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) for k, v in cfg.min_scores.items()):
        raise ConfigError(f"config key '{prefix}min_scores' must map score names to numbers, "
                          f"e.g. {{csim: 0.9}}; got {cfg.min_scores!r}")


def manifest_path(path: str | Path) -> str:
    """A manifest file, or a run folder's manifest.json (a local path or a URL)."""
    return storage.join(path, "manifest.json") if storage.isdir(path) else str(path)


# 2. the index -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PairRow:
    source: int  # which manifest
    shard: str  # the shard's path
    key: str
    video_key: str
    frames: int
    scores: tuple[tuple[str, float], ...]


def index_manifest(source: int, path: str, check: bool) -> list[PairRow]:
    """Every written pair of one manifest, in shard order: from its per-sample table when it has
    one, else from the shards' meta.json (one pass over the bytes). Made once per process and
    manifest version: a recipe that builds its held-out set at every evaluation does not check
    every shard's md5 again."""
    return list(_index(source, str(path), storage.version(path), check))


@functools.lru_cache(maxsize=32)
def _index(source: int, path: str, version: tuple, check: bool) -> tuple[PairRow, ...]:
    urls = shard_urls(path, check=check)
    manifest = read_manifest(path)
    table = manifest.get("table") and storage.join(storage.parent(path), manifest["table"])
    if table and storage.isfile(table):
        return tuple(_rows_from_table(source, table, path, urls))
    rows = []
    for sample in shard_samples(urls):
        meta = json.loads(sample["meta.json"])
        lo, hi = meta["frame_range"]
        rows.append(PairRow(source, sample["__url__"], sample["__key__"], meta.get("video_key", meta["source"]),
                            int(hi - lo), tuple(sorted((k, float(v)) for k, v in meta.get("scores", {}).items()))))
    return tuple(rows)


def _rows_from_table(source: int, table: str, path: str, urls: list[str]) -> list[PairRow]:
    import pandas as pd

    with storage.open_file(table, "rb") as f:
        frame = pd.read_parquet(f)
    frame = frame[(frame["kind"] == "pair") & frame["shard"].notna()]
    order = {u: i for i, u in enumerate(urls)}
    score_cols = [c for c in frame.columns if c.startswith("score_")]
    rows = []
    for r in frame.itertuples(index=False):
        url = storage.join(storage.parent(path), r.shard)
        if url not in order:  # a rejected shard the manifest keeps apart
            continue
        scores = tuple(sorted((c[len("score_"):], float(getattr(r, c))) for c in score_cols
                              if getattr(r, c) is not None and not np.isnan(getattr(r, c))))
        rows.append(PairRow(source, url, r.key, r.video_key, int(r.frame_end - r.frame_start), scores))
    # shard order, then the order inside each shard (the writer adds samples in key order)
    return sorted(rows, key=lambda row: (order[row.shard], row.key))


def skip_reason(row: PairRow, cfg: PairDataConfig) -> str | None:
    """Why the pair is left out: the first threshold it fails (`name < x`, `name missing`), or
    too few frames for one segment; None when it is kept."""
    if not segment_starts(row.frames, cfg):
        return f"fewer than {cfg.segment_frames} frames"
    min_scores, scores = cfg.min_scores, dict(row.scores)
    for name, threshold in sorted(min_scores.items()):
        if name not in scores:
            return f"{name} missing"
        if scores[name] < threshold:
            return f"{name} < {threshold:g}"
    return None


def segment_starts(frames: int, cfg: PairDataConfig) -> list[int]:
    return list(range(0, frames - cfg.segment_frames + 1, cfg.segment_stride or cfg.segment_frames))


# 3. the plan: one rank's shards of each epoch ---------------------------------------------------

class PairSource:
    """The kept pairs of some manifests (one pool of shards) and one rank's stream over them."""

    def __init__(self, rows: list[PairRow], cfg: PairDataConfig, split: str, rank: int, world_size: int,
                 source_id: int = 0):
        self.cfg, self.split, self.rank, self.world_size, self.id = cfg, split, rank, world_size, source_id
        self.rows = rows
        self.segments = {(r.shard, r.key): len(segment_starts(r.frames, cfg)) for r in rows}
        self.shards = list(dict.fromkeys(r.shard for r in rows))  # shards holding kept pairs, manifest order
        self.by_shard = {s: [r for r in rows if r.shard == s] for s in self.shards}
        # split_by_node when every rank gets a shard, else by pair (see the module docstring)
        self.by_pairs = len(self.shards) < world_size
        if rows and self.by_pairs and len(rows) < world_size:
            raise ConfigError(f"{len(rows)} {split} pairs cannot feed {world_size} ranks: every rank needs one")
        self.training = split == "train"

    def shard_order(self, epoch: int) -> list[str]:
        """The shards this rank reads in `epoch`, in order."""
        mine = self.shards if self.by_pairs else self.shards[self.rank::self.world_size]
        if not self.training:
            return mine
        if self.cfg.resample:  # ResampledShards: the same draws for the same (seed, rank, epoch)
            draws = wds.ResampledShards(mine, nshards=len(mine), seed=self.cfg.seed, deterministic=True,
                                        worker_seed=lambda: self.rank * 1_000_003 + self.id)
            draws.epoch = epoch - 1  # its __iter__ counts epochs from 0
            return [d["url"] for d in draws]
        # with split by pairs, every rank must read the shards in the same order
        seed = [self.cfg.seed, epoch, self.id] + ([] if self.by_pairs else [self.rank])
        return [mine[i] for i in np.random.default_rng(seed).permutation(len(mine))]

    def mine(self, order: list[str]) -> set[int] | None:
        """With split by pairs, the indices (in the epoch's run of kept pairs) this rank keeps."""
        if not self.by_pairs or (self.training and self.cfg.resample):
            return None
        total = sum(len(self.by_shard[s]) for s in order)
        return set(range(self.rank, total, self.world_size))

    def epoch_length(self, epoch: int) -> int:
        """Segments this rank streams in `epoch`, from the index alone."""
        order = self.shard_order(epoch)
        keep = self.mine(order)
        rows = [r for s in order for r in self.by_shard[s]]
        return sum(self.segments[r.shard, r.key] for i, r in enumerate(rows) if keep is None or i in keep)

    # 4. the stream --------------------------------------------------------------------------

    def epoch_items(self, epoch: int) -> Iterator[tuple[dict[str, Any], int]]:
        """(raw sample, segment start) of this rank's `epoch`, shuffled; nothing decoded."""
        order = self.shard_order(epoch)
        keep, wanted = self.mine(order), {(r.shard, r.key) for r in self.rows}
        cfg = self.cfg

        def kept_pairs(samples):
            n = 0
            for sample in samples:
                if (sample["__url__"], sample["__key__"]) not in wanted:  # other split, or below a threshold
                    continue
                if keep is None or n in keep:
                    yield sample
                n += 1

        def segments(samples):
            for sample in samples:
                meta = json.loads(sample["meta.json"])
                lo, hi = meta["frame_range"]
                for start in segment_starts(int(hi - lo), cfg):
                    yield sample, start

        def shuffled(size: int, stage: int) -> list:
            if not self.training or size <= 1:
                return []
            seed = int(np.random.SeedSequence([cfg.seed, epoch, self.rank, self.id, stage]).generate_state(1)[0])
            return [wds.shuffle(size, initial=size, rng=random.Random(seed))]

        # pairs are shuffled as raw bytes, then their segments in a small second buffer: a pair's
        # segments stay near each other, so a worker's cache decodes most pairs once, not once a segment
        stages = [wds.SimpleShardList(order), tar_samples, kept_pairs,
                  *shuffled(cfg.shuffle_buffer, 0), segments, *shuffled(cfg.segment_shuffle, 1)]
        return iter(wds.DataPipeline(*stages))

    def stream(self, position: int, epochs: int | None) -> Iterator[tuple[int, int, dict[str, Any], int]]:
        """(position, epoch, raw sample, start) from `position` on; earlier positions are skipped
        without decoding (whole epochs from the index, the rest by replaying raw bytes)."""
        epoch, base = 0, 0  # base: the position of the epoch's first segment
        while epochs is None or epoch < epochs:
            length = self.epoch_length(epoch)
            if length == 0:  # nothing kept (an empty split): an empty stream, not an endless loop
                return
            if position >= base + length:  # skip a whole epoch without reading it
                epoch, base = epoch + 1, base + length
                continue
            for j, (sample, start) in enumerate(self.epoch_items(epoch)):
                if base + j >= position:
                    yield base + j, epoch, sample, start
            epoch, base = epoch + 1, base + length


# 5. the dataset -----------------------------------------------------------------------------

class PairDataset(torch.utils.data.IterableDataset):
    """Streams segments of pairs (dicts of the batch contract, unbatched) of one split ("train":
    endless, shuffled; "heldout": one pass in manifest order) for one rank. `batch_size` is the
    unit loader workers split by (pass the DataLoader's). `audio_encoder` (AudioFeatures) adds
    `audio_features` and `alt_audio_features`: in loader workers keep it on CPU.

    `skipped` counts the pairs of this split that `min_scores` left out, by reason."""

    def __init__(self, cfg: PairDataConfig, split: str = "train", *, rank: int = 0, world_size: int = 1,
                 batch_size: int = 1, audio_encoder=None, epochs: int | None = None):
        check_config(cfg)
        if split not in ("train", "heldout"):
            raise ValueError(f"split is 'train' or 'heldout', not {split!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.cfg, self.split, self.rank, self.world_size = cfg, split, rank, world_size
        self.batch_size, self.audio_encoder = batch_size, audio_encoder
        self.epochs = epochs if epochs is not None else (None if split == "train" else 1)
        every = [row for i, path in enumerate(cfg.manifests)
                 for row in index_manifest(i, manifest_path(path), cfg.check_shards)]
        held = video_split(sorted({r.video_key for r in every}), cfg.heldout_share, cfg.seed)
        in_split = [r for r in every if (r.video_key in held) == (split == "heldout")]
        self.skipped: dict[str, int] = {}
        self.rows = []
        for r in in_split:
            reason = skip_reason(r, cfg)
            if reason is None:
                self.rows.append(r)
            else:
                self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if cfg.min_scores or self.skipped:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
            log.info("pair data (%s): %d of %d pairs kept (min_scores %s); skipped: %s", split, len(self.rows),
                     len(in_split), cfg.min_scores, reasons)
        mixed = cfg.weights is not None and len(cfg.manifests) > 1 and split == "train"
        if mixed:
            self.sources = [PairSource([r for r in self.rows if r.source == i], cfg, split, rank, world_size, i)
                            for i in range(len(cfg.manifests))]
            self.weights = np.asarray(cfg.weights, np.float64)
            self.weights[[not s.rows for s in self.sources]] = 0.0  # a manifest with nothing kept is never drawn
            if self.weights.sum() > 0:
                self.weights /= self.weights.sum()
        else:
            self.sources, self.weights = [PairSource(self.rows, cfg, split, rank, world_size)], None
        self.position = 0
        self._decoded: OrderedDict = OrderedDict()
        self._decoded_bytes = 0
        self.decodes = 0  # pairs this process decoded (a cache miss each)

    # -- order --

    def start_at(self, position: int) -> None:
        self.position = int(position)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "samples": self.fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("samples") != self.fingerprint():
            raise ValueError("the data changed since this checkpoint (pairs, split or settings): cannot resume exactly")
        self.start_at(state["position"])

    def fingerprint(self) -> str:
        """Names what the order depends on (pairs, split, rank, settings), not where the files lie."""
        settings = {k: v for k, v in vars(self.cfg).items() if k not in ("manifests", "check_shards")}
        return digest({"pairs": [(r.source, storage.name(r.shard), r.key, r.frames) for r in self.rows],
                       "split": self.split, "rank": self.rank, "world_size": self.world_size, "cfg": settings})

    def choices(self, lo: int, hi: int) -> np.ndarray:
        """The manifest each mixed position in [lo, hi) draws from (seeded blocks of MIX_BLOCK)."""
        out = []
        for block in range(lo // MIX_BLOCK, -(-hi // MIX_BLOCK)):
            rng = np.random.default_rng([self.cfg.seed, self.rank, block, 7])
            out.append(rng.choice(len(self.weights), MIX_BLOCK, p=self.weights))
        drawn = np.concatenate(out) if out else np.zeros(0, np.int64)
        first = (lo // MIX_BLOCK) * MIX_BLOCK
        return drawn[lo - first:hi - first]

    def raw_stream(self) -> Iterator[tuple[int, int, dict[str, Any], int, int]]:
        """(position, epoch, raw sample, start, source) from self.position on, nothing decoded."""
        if self.weights is None:
            for position, epoch, sample, start in self.sources[0].stream(self.position, self.epochs):
                yield position, epoch, sample, start, 0
            return
        if self.weights.sum() == 0:
            return
        # each manifest's own stream starts where the positions before self.position left it
        counts = np.zeros(len(self.sources), np.int64)
        for lo in range(0, self.position, MIX_BLOCK):
            counts += np.bincount(self.choices(lo, min(self.position, lo + MIX_BLOCK)), minlength=len(self.sources))
        streams = [s.stream(int(c), None) for s, c in zip(self.sources, counts)]
        position = self.position
        while True:
            for source in self.choices(position, (position // MIX_BLOCK + 1) * MIX_BLOCK):
                _, epoch, sample, start = next(streams[source])
                yield position, epoch, sample, start, int(source)
                position += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        stream = self.raw_stream()
        if info is not None and info.num_workers > 1:  # worker w takes batches w, w + n, ... (decodes only those)
            b, n, w = self.batch_size, info.num_workers, info.id
            stream = (item for k, item in enumerate(stream) if (k // b) % n == w)
        for position, epoch, raw, start, source in stream:
            sample = self.load(raw, start, epoch)
            sample["position"] = position
            if info is None:
                self.position = position + 1
            yield sample

    # -- one segment --

    def load(self, raw: dict[str, Any], start: int, epoch: int = 0) -> dict[str, Any]:
        """The segment at `start` of one raw pair sample as tensors of the batch contract."""
        cfg = self.cfg
        pair = self.decoded(raw)
        t, m, size = cfg.segment_frames, cfg.motion_frames, cfg.resolution
        real, syn, crop = pair["real"], pair["syn"], pair["crop"]  # frames at `size`, landmarks in crop pixels
        seg = slice(start, start + t)
        valid = len(pair["motion"]) + start >= m  # M real frames before the segment: this clip's, then stored crops
        if valid and m:
            before = real[start - m:start] if start >= m else np.concatenate([pair["motion"][len(pair["motion"]) - (m - start):],
                                                                             real[:start]])
            motion = video_tensor(before, size)
        else:
            motion = torch.zeros(3, m, size, size)
        real_lms = pair["real_landmarks"][seg].astype(np.float32)
        syn_lms = pair["syn_landmarks"][seg].astype(np.float32)
        alpha = pair["alpha"][seg]
        if alpha.dtype == np.uint8:  # at the crop's own size: not resized, so not converted up front
            alpha = alpha.astype(np.float32) / np.float32(255.0)
        out = {
            "target": video_tensor(real[seg], size),
            "motion": motion,
            "references": video_tensor(self.references(pair, start, epoch), size),
            "face_mask": face_mask(real_lms * (size / crop), size),
            "lip_mask": lip_mask(real_lms * (size / crop), size, cfg.lip_mask_dilation),
            "mouth_landmarks": mouth_landmarks(real_lms, crop),
            "audio": torch.from_numpy(_audio(pair["real_audio"], start, t)),
            "key": f"{pair['key']}@{start:05d}",
            "synthetic": video_tensor(syn[seg], size),
            "alpha": torch.from_numpy(np.ascontiguousarray(alpha)[None]),
            "alt_audio": torch.from_numpy(_audio(pair["alt_audio"], start, t)),
            "syn_mouth_landmarks": mouth_landmarks(syn_lms, crop),
            "syn_lip_mask": lip_mask(syn_lms * (size / crop), size, cfg.lip_mask_dilation),
            "motion_valid": torch.tensor(valid),
        }
        if self.audio_encoder is not None:
            out["audio_features"] = segment_audio_features(self.audio_encoder, pair["real_audio"], start, t)
            out["alt_audio_features"] = segment_audio_features(self.audio_encoder, pair["alt_audio"], start, t)
        return out

    def decoded(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The decoded (and augmented) pair at `resolution`, from this process's cache of the last
        pairs (DECODED_BYTES of them): each video is decoded, rebuilt, augmented and resized once per pair, and
        its segments are slices of it."""
        name = (raw["__url__"], raw["__key__"])
        if name in self._decoded:
            self._decoded.move_to_end(name)
            return self._decoded[name]
        pair = decode_sample(raw)
        self.decodes += 1
        if self.cfg.augment:
            pair = with_augmentation(pair, masks=False)
            pair.pop("clean_real", None), pair.pop("clean_syn", None)
        pair = at_resolution(pair, self.cfg.resolution)
        self._decoded[name] = pair
        self._decoded_bytes += _nbytes(pair)
        while self._decoded_bytes > DECODED_BYTES and len(self._decoded) > 1:
            self._decoded_bytes -= _nbytes(self._decoded.popitem(last=False)[1])
        return pair

    def references(self, pair: dict[str, Any], start: int, epoch: int) -> np.ndarray:
        """N real frames of the same clip outside the segment and its motion frames (any frame
        outside the segment when too few are; the segment's synthetic frames when the clip is
        the segment alone: same face and background, lips of another audio, so nothing of the
        target's lips leaks). Drawn from (seed, epoch, pair, start), not from rank or worker."""
        cfg, real = self.cfg, pair["real"]
        n, lo, hi = cfg.reference_frames, start - cfg.motion_frames, start + cfg.segment_frames
        own = [real[f] for f in range(len(real)) if not lo <= f < hi]
        pool = own if len(own) >= n else own + [real[f] for f in range(max(0, lo), start)]
        if not pool:
            pool = list(pair["syn"][start:hi])
        if n == 0:
            return real[:0]
        rng = np.random.default_rng([cfg.seed, epoch, zlib.crc32(pair["key"].encode()), start])
        picks = sorted(rng.choice(len(pool), n, replace=len(pool) < n))
        return np.stack([pool[i] for i in picks])


def _audio(pcm: np.ndarray, start: int, frames: int) -> np.ndarray:
    """The segment's int16 audio as float32 in [-1, 1], zero-padded to frames * 640 samples."""
    out = np.zeros(frames * SAMPLES_PER_FRAME, np.float32)
    piece = pcm[start * SAMPLES_PER_FRAME:(start + frames) * SAMPLES_PER_FRAME].astype(np.float32) / 32768.0
    out[:len(piece)] = piece
    return out


def _nbytes(pair: dict[str, Any]) -> int:
    return sum(v.nbytes for v in pair.values() if isinstance(v, np.ndarray))


def at_resolution(pair: dict[str, Any], size: int) -> dict[str, Any]:
    """The decoded pair's frames (real, syn, motion) resized to `size` once, as each segment's
    video_tensor would resize them (the same cv2 call per frame, so the same pixels), and its
    alpha as float32 in [0, 1] at `size` when it needs resizing (else left uint8, converted per
    segment: 4x smaller in the cache). `crop` keeps the stored side the landmarks are in."""
    crop = pair["real"].shape[1]
    out = dict(pair, crop=crop)
    if crop != size:
        for name in ("real", "syn", "motion"):
            out[name] = resize_frames(pair[name], size)
        out["alpha"] = _alpha(pair["alpha"], size)
    return out


def _alpha(alpha: np.ndarray, size: int) -> np.ndarray:
    """(T, S, S) uint8 -> (T, size, size) float32 in [0, 1]; area resizing keeps it 0 exactly where
    every source pixel it covers is 0, which is where the resized synthetic equals the target."""
    import cv2

    a = alpha.astype(np.float32) / np.float32(255.0)
    if a.shape[1] != size:
        interp = cv2.INTER_AREA if a.shape[1] > size else cv2.INTER_LINEAR
        a = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in a])
    return np.ascontiguousarray(a)


# 6. the loader ------------------------------------------------------------------------------

def pair_loader(dataset: PairDataset, num_workers: int = 0, **kwargs) -> torch.utils.data.DataLoader:
    """A DataLoader of batches (clip_data.collate) that are the same whatever `num_workers`."""
    return torch.utils.data.DataLoader(dataset, batch_size=dataset.batch_size, num_workers=num_workers,
                                       collate_fn=collate, persistent_workers=False, **kwargs)
