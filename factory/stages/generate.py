"""Generate: re-dub each real clip with its alternative clip's audio, composite, attach media."""

from __future__ import annotations

from factory.clips import load_clip, load_occlusion
from factory.config import GenerateConfig
from factory.devices import pick_device
from factory.faults import fault_point
from factory.faces.masks import composite, feathered_alpha, lower_face_mask
from factory.generators import GenerationInput, build_generator
from factory.records import Record
from factory.stage import Resources, Stage


class GenerateStage(Stage):
    name = "generate"

    def __init__(self, cfg: GenerateConfig):
        super().__init__(Resources(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus,
                                   batch_size=cfg.batch_size, pool_size=cfg.pool_size))
        self.cfg = cfg

    def setup(self) -> None:
        self.device = pick_device()
        self.generator = build_generator(self.cfg)
        self.generator.setup(self.device)

    def process(self, records: list[Record]) -> list[Record]:
        return [self.generate_one(r) for r in records]

    def generate_one(self, record: Record) -> Record:
        fault_point("generate", record.key)
        real = load_clip(record.meta["clip_path"])
        alt = load_clip(record.meta["alt_clip_path"])
        size = real.frames.shape[1]
        mask = lower_face_mask([real.landmarks, alt.landmarks], size)
        occlusion = load_occlusion(record.meta["clip_path"])  # None unless the occlusion stage ran
        rendered = self.generator.generate(GenerationInput(
            real.frames, real.landmarks, alt.frames, alt.landmarks, alt.audio, mask, occlusion))
        n = len(rendered)
        alpha = feathered_alpha(mask, self.cfg.feather_sigma, self.cfg.mask_dilation)
        if occlusion is not None:  # M_inp = not M_face or M_occ: occluder pixels stay real
            from factory.occlusion.compose import apply_occlusion

            alpha = apply_occlusion(alpha, occlusion[:n])
        record.media.update(
            real_frames=real.frames[:n], syn_frames=composite(real.frames[:n], rendered, alpha),
            real_audio=real.audio, alt_audio=alt.audio, real_landmarks=real.landmarks[:n],
            transforms=real.transforms[:n], mask=mask)
        record.meta.update(generator=self.generator.name, generator_version=self.generator.version,
                           device=self.device)
        return record
