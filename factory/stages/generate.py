"""Generate: re-dub each real clip with its alternative clip's audio, composite, attach media."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from factory import storage
from factory.clips import load_clip, load_occlusion, with_suffix
from factory.config import build
from factory.devices import free_accelerator_memory, pick_device
from factory.faces.masks import composite, compositing_alpha, lower_face_mask, nose_masks
from factory.faces.registration import move_points, register
from factory.faults import fault_point
from factory.generators import GenerationInput, Generator, generator_class
from factory.metrics.frames import evenly_spaced
from factory.payload import PairMedia
from factory.records import Record
from factory.stage import Resources, Stage


MOTION_FRAMES = 5  # real frames before a clip stored with each sample (X-Dub's m)


@dataclass
class GenerateConfig:
    generator: str = "transplant"  # a registered name (entry point group `factory.generators`)
    weights: str | None = None  # a save_pretrained folder: learned generators load from it
    settings: Any = None  # the generator's own settings (its `Settings` class validates them)
    # Compositing, in pixels of a 256 crop (scaled with it). The lower face is grown by mask_dilation
    # before the Gaussian feather: with dilation >= 2.1 sigma, alpha >= 0.98 on the whole lower face.
    feather_sigma: float = 2.0
    mask_dilation: int = 5
    resources: Resources = field(default_factory=lambda: Resources(pool_size=2))


def build_generator(cfg: GenerateConfig) -> Generator:
    cls = generator_class(cfg.generator)
    settings = cfg.settings
    if isinstance(settings, dict) and not settings:
        settings = None
    if isinstance(settings, dict):  # not yet validated (built in code, not loaded)
        settings = build(cls.Settings, settings, prefix="generate.settings.")
    if cfg.weights:  # the folder's own settings unless given (pipelines/settings.py merges a run's on top)
        return cls.from_pretrained(cfg.weights, settings=settings)
    return cls(settings if settings is not None else cls.Settings())


class GenerateStage(Stage):
    name = "generate"
    provides = ("real_frames", "syn_frames", "real_audio", "alt_audio", "clip_landmarks", "transforms",
                "mask", "occlusion", "alpha", "motion_frames", "speech")

    def __init__(self, cfg: GenerateConfig, seed: int = 0):
        super().__init__(cfg.resources)
        self.cfg, self.seed = cfg, seed

    def setup(self) -> None:
        self.device = pick_device()
        self.generator = build_generator(self.cfg)
        self.generator.setup(self.device)

    def teardown(self) -> None:
        self.generator = None
        free_accelerator_memory()

    def process(self, records: list[Record]) -> list[Record]:
        prepared = [self.prepare(r) for r in records]
        rendered = self.generator.generate_batch([inp for inp, _, _ in prepared])
        return [self.finish(r, *p, out) for r, p, out in zip(records, prepared, rendered)]

    def prepare(self, record: Record) -> tuple[GenerationInput, PairMedia, np.ndarray]:
        fault_point("generate", record.key)
        real = load_clip(record.meta["clip_path"])
        alt = load_clip(record.meta["alt_clip_path"])
        n, size = min(len(real.frames), len(alt.frames)), real.frames.shape[1]
        real_lms, alt_lms = real.landmarks[:n], alt.landmarks[:n]
        # The alternative face where a transplant lays it on the real one (registered on the nose):
        # the mask must cover both lower faces where they will be, on every frame.
        registration = register(alt.frames[:n], real.frames[:n], real_lms)
        alt_on_real = move_points(alt_lms, registration)
        alpha = lower_face_alpha(real_lms, alt_on_real, size, self.cfg.feather_sigma, self.cfg.mask_dilation)
        mask = (alpha > 0).any(axis=0).astype(np.uint8)  # the edit's support: outside it, syn == real exactly
        occ_path = record.meta.get("occlusion_masks")  # set by this run's occlusion stage, else none
        occlusion = load_occlusion(occ_path)[:n] if occ_path else None
        alt_occ_path = occ_path and sibling_occlusion(occ_path, record.meta["clip_path"], record.meta["alt_clip_path"])
        alt_occlusion = load_occlusion(alt_occ_path)[:n] if alt_occ_path and storage.exists(alt_occ_path) else None
        refs, motion = self.generator.reference_frames, self.generator.motion_frames
        before_path = record.meta.get("motion_clip_path")  # set by pairing when the clip before is contiguous
        before = load_clip(before_path).frames if before_path else None
        inp = GenerationInput(
            key=record.key, real_frames=real.frames[:n], real_landmarks=real_lms, real_audio=real.audio,
            alt_frames=alt.frames[:n], alt_landmarks=alt_lms, alt_audio=alt.audio,
            masks=np.broadcast_to(mask, (n, size, size)), occlusion=occlusion, alt_occlusion=alt_occlusion,
            alt_registration=registration,
            reference_frames=real.frames[evenly_spaced(n, refs)] if refs else None,
            motion_frames=before[-motion:] if before is not None and motion else None,
            fps=record.meta.get("fps", 25), sample_rate=record.meta.get("sample_rate", 16000),
            seed=zlib.crc32(record.key.encode()) ^ self.seed)
        media = PairMedia(real_frames=real.frames[:n], real_audio=real.audio, alt_audio=alt.audio,
                          clip_landmarks=real_lms, transforms=real.transforms[:n], mask=mask,
                          occlusion=occlusion,
                          # for the samples whatever the generator uses: X-Dub's m = 5 motion frames
                          motion_frames=before[-MOTION_FRAMES:] if before is not None else None,
                          speech=np.asarray(record.meta["speech"][:n], bool) if "speech" in record.meta else None)
        return inp, media, alpha

    def finish(self, record: Record, inp: GenerationInput, media: PairMedia, alpha: np.ndarray,
               rendered: np.ndarray) -> Record:
        n = min(len(rendered), len(media.real_frames))
        per_frame = alpha[:n].copy()
        if inp.occlusion is not None:  # M_inp = not M_face or M_occ: occluder pixels stay real, exactly
            per_frame[inp.occlusion[:n]] = 0
        # The stored uint8 alpha is the one composited with: real, render and alpha give syn bit for bit.
        media.syn_frames = composite(media.real_frames[:n], rendered[:n], per_frame)
        media.alpha = per_frame
        record.media = media
        record.meta.update(generator=self.generator.name, generator_version=self.generator.version,
                           device=self.device)
        return record


def lower_face_alpha(real_landmarks: np.ndarray, other_landmarks: np.ndarray, size: int, feather_sigma: float,
                     mask_dilation: int) -> np.ndarray:
    """(T, S, S) uint8 compositing alpha: both clips' lower faces on every frame (jaw clamped), the
    real nose cut out per frame. Feather and dilation are in pixels of a 256 crop (scaled with it,
    so a 512 crop looks the same). Also what `factory dub` pastes with."""
    face = lower_face_mask([real_landmarks, other_landmarks], size)
    scale = size / 256
    return compositing_alpha(face, nose_masks(real_landmarks, size), feather_sigma * scale,
                             round(mask_dilation * scale))


def sibling_occlusion(occ_path: str, clip_path: str, other_clip_path: str) -> Path | str:
    """The occluder masks the same occlusion settings made for another clip (they sit beside it,
    named by the same tag: factory.clips.occlusion_path). Paths or URLs (no Path() on a URL)."""
    clip_stem = Path(storage.name(clip_path)).stem
    suffix = storage.name(occ_path)[len(clip_stem):]  # ".occlusion-<tag>.npz"
    return with_suffix(other_clip_path, suffix)
