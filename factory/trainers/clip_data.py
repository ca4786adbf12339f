"""The clip dataset of the learned generators: segments of ingested clips as the batch dict of
issue 13 (target, motion, references, face and lip masks, mouth landmarks, audio, audio features).

Read top to bottom: 1. settings, 2. the sample list (clip stores -> (clip, segment start) pairs,
split by video), 3. the order (seeded by (seed, epoch), cut by rank, then by loader worker),
4. one sample (loaded lazily from its clip file), 5. collation.

A sample is a segment of `segment_frames` frames (4k + 1 for the Wan VAE) starting at index
>= `motion_frames`, so the `motion_frames` real frames before it exist in the same clip. Segments
are cut every `segment_stride` frames. References are `reference_frames` frames of the same video
outside the segment and its motion frames: from the same clip when it has enough of them (no
second file to read), else from the video's other clips too.

Order and resume: the stream of a rank is epoch after epoch of a permutation drawn from
(seed, epoch), of which rank r takes every world_size-th sample. A stream position p is a count
of samples this rank has consumed; `start_at(p)` makes iteration begin there, so a resumed run
sees exactly the samples an uninterrupted one would. Every sample carries its `position`
(collated to a tensor): a loop checkpoints `batch["position"][-1] + 1`. Loader workers take whole
batches in turn (worker w the batches w, w + n, ...), which is the order DataLoader returns them
in, so the batches are the same with any number of workers. All per-sample randomness comes from
(seed, epoch, sample), never from which rank or worker drew it.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Iterator

import cv2
import numpy as np
import torch

from factory import storage
from factory.clips import load_clip
from factory.config import ConfigError, digest
from factory.faces.landmarks import LIPS_OUTER, MOUTH
from factory.faces.masks import dilate, lower_face_mask
from factory.trainers.clip_sources import clip_records, video_split

SAMPLES_PER_FRAME = 640  # 16 kHz audio at 25 fps


# 1. settings --------------------------------------------------------------------------------

@dataclass
class ClipDataConfig:
    clip_stores: list[str] = field(default_factory=list)  # folders written by `factory ingest`
    resolution: int = 256  # frames and masks are resized to this square side
    segment_frames: int = 25  # T: 4k + 1 (the Wan VAE)
    segment_stride: int | None = None  # frames between segment starts (null: segment_frames)
    motion_frames: int = 5  # M real frames before the segment
    reference_frames: int = 4  # N frames of the same video outside the segment
    heldout_share: float = 0.1  # share of videos held out (by video, so no frame leaks)
    seed: int = 0
    lip_mask_dilation: int = 2  # pixels (at `resolution`) around the outer lip hull
    max_clips: int | None = None


def check_config(cfg: ClipDataConfig, prefix: str = "") -> None:
    if (cfg.segment_frames - 1) % 4 or cfg.segment_frames < 1:
        raise ConfigError(f"config key '{prefix}segment_frames' must be 4k + 1 (the Wan VAE), not {cfg.segment_frames}")
    for name in ("motion_frames", "reference_frames"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"config key '{prefix}{name}' must be >= 0")
    if cfg.resolution < 8:
        raise ConfigError(f"config key '{prefix}resolution' must be >= 8")


# 2. the sample list -------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipRef:
    key: str
    video_key: str
    path: str
    frames: int


@dataclass(frozen=True)
class Sample:
    clip: int  # index into ClipDataset.clips
    start: int  # first frame of the segment


def list_clips(cfg: ClipDataConfig) -> list[ClipRef]:
    records = clip_records(cfg.clip_stores, cfg.max_clips)
    clips = []
    for r in records:
        lo, hi = r.meta.get("frame_range") or (0, len(load_clip(r.meta["clip_path"]).frames))
        clips.append(ClipRef(r.key, r.meta.get("video_key", r.key), r.meta["clip_path"], int(hi - lo)))
    return clips


def segment_starts(frames: int, cfg: ClipDataConfig) -> list[int]:
    stride = cfg.segment_stride or cfg.segment_frames
    return list(range(cfg.motion_frames, frames - cfg.segment_frames + 1, stride))


# 3-5. the dataset ---------------------------------------------------------------------------

class ClipDataset(torch.utils.data.IterableDataset):
    """Streams samples (dicts of the batch contract, unbatched) of one split ("train" or
    "heldout") for one rank. `batch_size` is the unit loader workers split by (pass the
    DataLoader's); `epochs` None streams forever. `audio_encoder` (factory/models/audio_features.py
    AudioFeatures) adds `audio_features`: in loader workers keep it on CPU."""

    def __init__(self, cfg: ClipDataConfig, split: str = "train", *, rank: int = 0, world_size: int = 1,
                 batch_size: int = 1, epochs: int | None = 1, audio_encoder=None):
        check_config(cfg)
        if split not in ("train", "heldout"):
            raise ValueError(f"split is 'train' or 'heldout', not {split!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.cfg, self.split, self.rank, self.world_size = cfg, split, rank, world_size
        self.batch_size, self.epochs, self.audio_encoder = batch_size, epochs, audio_encoder
        every = list_clips(cfg)
        held = video_split(sorted({c.video_key for c in every}), cfg.heldout_share, cfg.seed)
        self.clips = [c for c in every if (c.video_key in held) == (split == "heldout")]
        self.videos: dict[str, list[int]] = {}
        for i, c in enumerate(self.clips):
            self.videos.setdefault(c.video_key, []).append(i)
        self.samples = [Sample(i, s) for i, c in enumerate(self.clips) for s in segment_starts(c.frames, cfg)]
        self.position = 0

    # -- order --

    @property
    def samples_per_epoch(self) -> int:
        """Samples of one epoch this rank sees (ranks differ by at most one)."""
        return len(range(self.rank, len(self.samples), self.world_size))

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This rank's sample indices for `epoch`: its share of the (seed, epoch) permutation."""
        perm = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.samples))
        return perm[self.rank::self.world_size]

    def start_at(self, position: int) -> None:
        self.position = int(position)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "samples": self.fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("samples") != self.fingerprint():
            raise ValueError("the data changed since this checkpoint (clips, split or settings): cannot resume exactly")
        self.start_at(state["position"])

    def fingerprint(self) -> str:
        """Names what the order depends on (clips, split, rank, settings), not where the stores lie."""
        settings = {k: v for k, v in vars(self.cfg).items() if k != "clip_stores"}
        return digest({"clips": [(c.key, c.frames) for c in self.clips], "split": self.split, "rank": self.rank,
                       "world_size": self.world_size, "cfg": settings})

    def positions(self) -> Iterator[tuple[int, int, int]]:
        """(position, epoch, sample index) of this rank's stream from self.position on."""
        per = self.samples_per_epoch
        if per == 0:
            return
        epoch, offset = divmod(self.position, per)
        while self.epochs is None or epoch < self.epochs:
            order = self.epoch_order(epoch)
            for j in range(offset, per):
                yield epoch * per + j, epoch, int(order[j])
            epoch, offset = epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        stream = self.positions()
        if info is not None and info.num_workers > 1:  # worker w takes batches w, w + n, ...
            b, n, w = self.batch_size, info.num_workers, info.id
            stream = (item for k, item in enumerate(stream) if (k // b) % n == w)
        for position, epoch, index in stream:
            sample = self.load(index, epoch)
            sample["position"] = position
            if info is None:
                self.position = position + 1
            yield sample

    # -- one sample --

    def reference_indices(self, index: int, epoch: int) -> list[tuple[int, int]]:
        """(clip, frame) of the N references of sample `index`: frames of the same video outside
        the segment and its motion frames; from the same clip when it has enough."""
        cfg, s = self.cfg, self.samples[index]
        rng = np.random.default_rng([cfg.seed, epoch, index, 1])
        lo, hi = s.start - cfg.motion_frames, s.start + cfg.segment_frames
        own = [(s.clip, f) for f in range(self.clips[s.clip].frames) if not lo <= f < hi]
        pool = own
        if len(own) < cfg.reference_frames:
            others = [i for i in self.videos[self.clips[s.clip].video_key] if i != s.clip]
            pool = own + [(i, f) for i in others for f in range(self.clips[i].frames)]
        if not pool:
            raise ValueError(f"clip {self.clips[s.clip].key}: no frame of its video outside the segment for references")
        picks = rng.choice(len(pool), cfg.reference_frames, replace=len(pool) < cfg.reference_frames)
        return sorted(pool[i] for i in picks)

    def load(self, index: int, epoch: int = 0) -> dict[str, Any]:
        """Sample `index` as numpy arrays / tensors of the batch contract (without the batch axis)."""
        cfg, s = self.cfg, self.samples[index]
        ref = self.clips[s.clip]
        clip = open_clip(ref.path)
        t, m, size = cfg.segment_frames, cfg.motion_frames, cfg.resolution
        crop = clip.frames.shape[1]
        refs = self.reference_indices(index, epoch)
        loaded = {s.clip: clip}
        ref_frames = []
        for ci, f in refs:
            if ci not in loaded:
                loaded[ci] = open_clip(self.clips[ci].path)
            ref_frames.append(loaded[ci].frames[f])
        lms = clip.landmarks[s.start:s.start + t].astype(np.float32) * (size / crop)
        audio = np.zeros(t * SAMPLES_PER_FRAME, np.float32)
        pcm = clip.audio[s.start * SAMPLES_PER_FRAME:(s.start + t) * SAMPLES_PER_FRAME].astype(np.float32) / 32768.0
        audio[:len(pcm)] = pcm
        out = {
            "target": video_tensor(clip.frames[s.start:s.start + t], size),
            "motion": video_tensor(clip.frames[s.start - m:s.start], size),
            "references": video_tensor(np.stack(ref_frames) if ref_frames else clip.frames[:0], size),
            "face_mask": face_mask(lms, size),
            "lip_mask": lip_mask(lms, size, cfg.lip_mask_dilation),
            "mouth_landmarks": mouth_landmarks(clip.landmarks[s.start:s.start + t], crop),
            "audio": torch.from_numpy(audio),
            "key": f"{ref.key}@{s.start:05d}",
        }
        if self.audio_encoder is not None:
            out["audio_features"] = segment_audio_features(self.audio_encoder, clip.audio, s.start, t)
        return out


def segment_audio_features(encoder, pcm: np.ndarray, start: int, frames: int) -> torch.Tensor:
    """(frames, W, D) features of a segment of a clip's int16 `pcm`: windows of the segment's
    frames, encoded with up to half a window of the clip's audio on each side, so a window at the
    segment's edge sees audio, not padding."""
    pad = -(-encoder.window // 4)  # video frames in half a window (2 steps a frame)
    total = len(pcm) // SAMPLES_PER_FRAME
    lo, hi = max(0, start - pad), min(total, start + frames + pad)
    context = np.zeros((hi - lo) * SAMPLES_PER_FRAME, np.float32)
    piece = pcm[lo * SAMPLES_PER_FRAME:hi * SAMPLES_PER_FRAME].astype(np.float32) / 32768.0
    context[:len(piece)] = piece
    feats = encoder(torch.from_numpy(context)[None])[0]
    return feats[start - lo:start - lo + frames].float().cpu()


def face_mask(landmarks: np.ndarray, size: int) -> torch.Tensor:
    """(1, T, size, size) float {0, 1}: the static lower-face mask of (T, 478, 2) landmarks at `size`."""
    mask = torch.from_numpy(lower_face_mask([landmarks], size).astype(np.float32))
    return mask.expand(1, len(landmarks), size, size).contiguous()  # one copy, not two


def lip_mask(landmarks: np.ndarray, size: int, dilation: int) -> torch.Tensor:
    """(1, T, size, size) float {0, 1}: each frame's outer lip hull, dilated by `dilation` pixels."""
    lip = np.stack([dilate(hull_mask(frame[LIPS_OUTER], size), dilation) for frame in landmarks])
    return torch.from_numpy(lip.astype(np.float32)[None])


def mouth_landmarks(landmarks: np.ndarray, crop: int) -> torch.Tensor:
    """(T, K, 2) mouth points of (T, 478, 2) crop-pixel landmarks, in [0, 1] of the crop."""
    return torch.from_numpy(np.clip(landmarks[:, MOUTH] / crop, 0, 1).astype(np.float32))


def open_clip(path: str):
    """A clip file's arrays memory-mapped (np.savez stores them uncompressed), so a sample reads
    the frames it uses, not all of them; falls back to load_clip for a compressed file, and for
    an object (one GET of the whole clip: a store on s3:// has no memory map)."""
    if storage.is_url(path):
        return load_clip(path)
    arrays = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                return load_clip(path)
            f.seek(info.header_offset + 26)  # the local header's name and extra-field lengths
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            arrays[info.filename.removesuffix(".npy")] = np.memmap(path, dtype, "r", f.tell(), shape,
                                                                   "F" if fortran else "C")
    return SimpleNamespace(**arrays)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(F, S, S, ...) frames resized to (F, size, size, ...): area when shrinking, else linear."""
    if not len(frames) or frames.shape[1] == size:
        return frames
    interp = cv2.INTER_AREA if frames.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])


def video_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """(F, S, S, 3) uint8 -> (3, F, size, size) float32 in [-1, 1] (x / 127.5 - 1, in float32)."""
    frames = resize_frames(frames, size)
    x = np.asarray(frames).reshape(len(frames), size, size, 3).transpose(3, 0, 1, 2)
    # one pass from the uint8 frames into the float layout, then two in place: half the memory
    # traffic of four float temporaries, and the same float32 values (IEEE division)
    out = np.empty(x.shape, np.float32)
    np.copyto(out, x)
    out /= np.float32(127.5)
    out -= np.float32(1.0)
    return torch.from_numpy(out)


def hull_mask(points: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return mask


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into the batch dict: tensors gain the batch axis, `key` stays a list of str,
    `position` becomes an int64 tensor."""
    out: dict[str, Any] = {}
    for name in samples[0]:
        values = [s[name] for s in samples]
        if name == "key":
            out[name] = values
        elif name == "position":
            out[name] = torch.tensor(values, dtype=torch.int64)
        else:
            out[name] = torch.stack(values, out=_shared_batch(values))
    return out


def _shared_batch(values: list[torch.Tensor]) -> torch.Tensor | None:
    """In a loader worker, the batch tensor allocated in shared memory (as torch's default_collate
    does): the worker hands it over without copying it once more (~290 MB a batch of 4 at 256 px)."""
    if torch.utils.data.get_worker_info() is None:
        return None
    first = values[0]
    storage = first._typed_storage()._new_shared(len(values) * first.numel(), device=first.device)
    return first.new(storage).resize_(len(values), *first.shape)


def data_loader(dataset: ClipDataset, num_workers: int = 0, **kwargs) -> torch.utils.data.DataLoader:
    """A DataLoader whose batches are the same whatever `num_workers` (see the module docstring)."""
    return torch.utils.data.DataLoader(dataset, batch_size=dataset.batch_size, num_workers=num_workers,
                                       collate_fn=collate, persistent_workers=False, **kwargs)

