"""Generate: re-dub each real clip with its alternative clip's audio, composite, attach media."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from factory.clips import load_clip, load_occlusion
from factory.config import build
from factory.devices import free_accelerator_memory, pick_device
from factory.faces.masks import composite, feathered_alpha, lower_face_mask
from factory.faults import fault_point
from factory.generators import GenerationInput, Generator, generator_class
from factory.metrics.frames import evenly_spaced
from factory.payload import PairMedia
from factory.records import Record
from factory.stage import Resources, Stage


@dataclass
class GenerateConfig:
    generator: str = "transplant"  # a registered name (entry point group `factory.generators`)
    weights: str | None = None  # a save_pretrained folder: learned generators load from it
    settings: Any = None  # the generator's own settings (its `Settings` class validates them)
    feather_sigma: float = 5.0  # Gaussian feathering of the composite, in pixels of a 256 crop (scaled with it)
    mask_dilation: int = 10  # pixels of a 256 crop; outside the dilated mask, the synthetic frame equals the real one
    resources: Resources = field(default_factory=lambda: Resources(pool_size=2))


def build_generator(cfg: GenerateConfig) -> Generator:
    cls = generator_class(cfg.generator)
    if cfg.weights:
        return cls.from_pretrained(cfg.weights)
    settings = cfg.settings
    if settings is None or isinstance(settings, dict):  # not yet validated (built in code, not loaded)
        settings = build(cls.Settings, settings or {}, prefix="generate.settings.")
    return cls(settings)


class GenerateStage(Stage):
    name = "generate"
    provides = ("real_frames", "syn_frames", "real_audio", "alt_audio", "clip_landmarks", "transforms",
                "mask", "occlusion", "alpha")

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
        rendered = self.generator.generate_batch([inp for inp, _ in prepared])
        return [self.finish(r, inp, media, out) for r, (inp, media), out in zip(records, prepared, rendered)]

    def prepare(self, record: Record) -> tuple[GenerationInput, PairMedia]:
        fault_point("generate", record.key)
        real = load_clip(record.meta["clip_path"])
        alt = load_clip(record.meta["alt_clip_path"])
        n, size = min(len(real.frames), len(alt.frames)), real.frames.shape[1]
        mask = lower_face_mask([real.landmarks, alt.landmarks], size)
        occ_path = record.meta.get("occlusion_masks")  # set by this run's occlusion stage, else none
        occlusion = load_occlusion(occ_path)[:n] if occ_path else None
        refs, motion = self.generator.reference_frames, self.generator.motion_frames
        before = record.meta.get("motion_clip_path") if motion else None
        inp = GenerationInput(
            key=record.key, real_frames=real.frames[:n], real_landmarks=real.landmarks[:n], real_audio=real.audio,
            alt_frames=alt.frames[:n], alt_landmarks=alt.landmarks[:n], alt_audio=alt.audio,
            masks=np.broadcast_to(mask, (n, size, size)), occlusion=occlusion,
            reference_frames=real.frames[evenly_spaced(n, refs)] if refs else None,
            motion_frames=load_clip(before).frames[-motion:] if before else None,
            fps=record.meta.get("fps", 25), sample_rate=record.meta.get("sample_rate", 16000),
            seed=zlib.crc32(record.key.encode()) ^ self.seed)
        media = PairMedia(real_frames=real.frames[:n], real_audio=real.audio, alt_audio=alt.audio,
                          clip_landmarks=real.landmarks[:n], transforms=real.transforms[:n], mask=mask,
                          occlusion=occlusion)
        return inp, media

    def finish(self, record: Record, inp: GenerationInput, media: PairMedia, rendered: np.ndarray) -> Record:
        n = min(len(rendered), len(media.real_frames))
        scale = media.mask.shape[0] / 256  # the settings are in pixels of a 256 crop: the same look at 512
        alpha = feathered_alpha(media.mask, self.cfg.feather_sigma * scale, round(self.cfg.mask_dilation * scale))
        if inp.occlusion is not None:  # M_inp = not M_face or M_occ: occluder pixels stay real
            from factory.occlusion.compose import apply_occlusion

            alpha = apply_occlusion(alpha, inp.occlusion[:n])
        media.syn_frames = composite(media.real_frames[:n], rendered[:n], alpha)
        per_frame = np.broadcast_to(alpha, (n, *alpha.shape[-2:]))
        media.alpha = np.rint(per_frame * 255).astype(np.uint8)  # what was used: trainers and storage need it
        record.media = media
        record.meta.update(generator=self.generator.name, generator_version=self.generator.version,
                           device=self.device)
        return record
