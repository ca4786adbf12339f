"""Occlusion masks, before generation (X-Dub): the VLM says whether anything is in front of the
face and boxes it on a few frames of the clip (`occlusion.probe_frames`, spread evenly, asked in
one batch: an occluder that comes and goes is still seen), SAM 2 propagates the boxes' masks
through the clip, and the masks are stored
beside the clip. The generate stage then re-renders only `M_face and not M_occ`, so a hand or a
microphone in front of the mouth is kept, not painted over.

Idempotent per clip: a clip whose masks are stored is not asked again (resumed runs are cheap).
A VLM that answers nonsense twice rejects the clip with `occlusion_vlm_malformed`: an occluder
nobody checked could be painted over, and such a pair would teach artefacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from factory.clips import load_clip, occlusion_path, save_occlusion
from factory.config import digest, to_dict
from factory.devices import free_accelerator_memory
from factory.records import Record
from factory.stage import Resources, Stage


@dataclass
class OcclusionConfig:
    """Occlusion masks before generation: the VLM boxes occluders, SAM 2 propagates their masks, and
    the generator keeps those pixels (M_inp = not M_face or M_occ)."""

    enabled: bool = False
    vlm_path: str | None = None  # local Qwen2.5-VL folder; None: filters.vlm_quality.model_path
    sam2_config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"  # a config inside the sam2 package
    sam2_checkpoint: str | None = None  # local SAM 2 checkpoint (.pt), e.g. sam2.1_hiera_tiny.pt
    image_size: int = 512  # SAM 2 input resolution (1024 in the released models)
    probe_frames: int = 3  # frames of each clip the VLM is asked about (first, middle, last)
    resources: Resources = field(default_factory=lambda: Resources(num_gpus=1.0))


def masks_tag(cfg: OcclusionConfig, vlm_path: str | None) -> str:
    """Names a clip's stored masks by the settings that made them: masks from other settings
    (or another run) are never picked up by accident."""
    return digest({**{k: v for k, v in to_dict(cfg).items() if k not in ("resources", "enabled")},
                   "vlm_path": vlm_path})[:12]


class OcclusionStage(Stage):
    name = "occlusion"

    def __init__(self, cfg: OcclusionConfig, vlm_path: str | None, vlm_key: str, max_pixels: int,
                 allow_random_weights: bool = False, logits_processor=None):
        super().__init__(cfg.resources)
        self.cfg, self.vlm_path, self.vlm_key, self.max_pixels = cfg, vlm_path, vlm_key, max_pixels
        self.tag = masks_tag(cfg, vlm_path)
        self.allow_random_weights = allow_random_weights  # tests: SAM 2 without a checkpoint
        self.logits_processor = logits_processor  # tests and constrained decoding

    def setup(self) -> None:
        from factory.occlusion.sam2_video import OcclusionTracker
        from factory.vlm.model import QwenVL

        self.vlm = QwenVL(self.vlm_path, self.vlm_key, max_pixels=self.max_pixels)
        self.tracker = OcclusionTracker(self.cfg.sam2_config, self.cfg.sam2_checkpoint, self.cfg.image_size,
                                        allow_random_weights=self.allow_random_weights)

    def teardown(self) -> None:
        self.vlm = self.tracker = None
        free_accelerator_memory()

    def process(self, records: list[Record]) -> list[Record]:
        return [self.mask_one(r) for r in records]

    def mask_one(self, record: Record) -> Record:
        from factory.vlm.grounding import ground_occluders

        path = record.meta["clip_path"]
        stored = occlusion_path(path, self.tag)
        record.meta["occlusion_masks"] = str(stored)  # generation uses exactly these masks
        if stored.exists():
            with np.load(stored) as z:
                record.meta["occluders"] = json.loads(str(z["occluders"]))
            return record
        frames = load_clip(path).frames
        found, reason = ground_occluders(self.vlm, frames, logits_processor=self.logits_processor,
                                         probes=self.cfg.probe_frames)
        if reason:
            return record.reject(reason, self.name)
        prompts: dict[int, list] = {}
        for frame, _, box in found:
            prompts.setdefault(frame, []).append(box)
        masks = self.tracker.track_prompts(frames, prompts)
        occluders = [{"frame": frame, "label": label, "box": [int(v) for v in box]} for frame, label, box in found]
        save_occlusion(stored, masks, json.dumps(occluders))
        record.meta["occluders"] = occluders
        return record
