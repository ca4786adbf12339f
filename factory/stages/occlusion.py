"""Occlusion masks, before generation (X-Dub): the VLM says whether anything is in front of the
face and boxes it on probe frames at most `occlusion.probe_every` frames apart (asked in one batch:
a hand passing in front of the mouth for a second is seen), boxes of the same occluder on several
probes become one object (label + overlap), SAM 2 propagates each object's mask through the clip,
an implausibly large mask is discarded or rejects the clip (`oversize`), and the masks are stored
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

from factory import storage
from factory.clips import load_clip, occlusion_path, open_npz, save_occlusion
from factory.config import ConfigError, digest, to_dict
from factory.devices import free_accelerator_memory
from factory.occlusion.objects import area_shares, face_regions, group_occluders, oversize_reason
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
    probe_every: int = 25  # frames between probes at most (25: every second at 25 fps), first and last included
    match_iou: float = 0.3  # a box on a later probe continues an occluder of the same label above this IoU
    max_crop_share: float = 0.4  # an occluder mask above this share of the crop (any frame) is implausible
    max_face_share: float = 0.8  # ... or above this share of the face (landmark hull)
    oversize: str = "reject"  # an implausible mask: "reject" the clip, or "discard" that occluder
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
        if cfg.oversize not in ("reject", "discard"):
            raise ConfigError(f"occlusion.oversize must be 'reject' or 'discard', got {cfg.oversize!r}")
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
        if storage.exists(stored):  # a local file or an object beside the clip's
            with open_npz(stored) as z:
                record.meta["occluders"] = json.loads(str(z["occluders"]))
            return record
        clip = load_clip(path)
        frames = clip.frames
        found, reason = ground_occluders(self.vlm, frames, logits_processor=self.logits_processor,
                                         probe_every=self.cfg.probe_every)
        if reason:
            return record.reject(reason, self.name)
        objects = group_occluders(found, self.cfg.match_iou)
        tracks = self.tracker.track_objects(frames, [obj.boxes for obj in objects])
        face = face_regions(clip.landmarks, *frames.shape[1:3]) if objects else None
        masks = np.zeros(frames.shape[:3], bool)
        occluders = []
        for obj, track in zip(objects, tracks):
            crop_share, face_share = area_shares(track, face)
            oversize = oversize_reason(crop_share, face_share, self.cfg.max_crop_share, self.cfg.max_face_share)
            occluders.append({"label": obj.label, "boxes": {str(f): [int(v) for v in b] for f, b in obj.boxes.items()},
                              "crop_share": round(crop_share, 4), "face_share": round(face_share, 4),
                              "discarded": oversize})
            if oversize is None:
                masks |= track
        record.meta["occluders"] = occluders
        rejected = [o["discarded"] for o in occluders if o["discarded"]]
        if rejected and self.cfg.oversize == "reject":  # a mask nobody can trust: neither keep nor paint over
            return record.reject(rejected[0], self.name)
        save_occlusion(stored, masks, json.dumps(occluders))
        return record
