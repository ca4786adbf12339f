"""An `xdub-stage2` folder as a dubber: X-Dub's mask-free editor re-renders a user's video.

At inference the roles of training turn around: the user's own frames are the reference (the
V_syn role: the video whose lips are to change) and the new audio drives. Per `factory dub`
segment the crops are resized to the editor's resolution and dubbed by `edit_long` in the
editor's own motion-bridged windows (`settings.segment_frames`, 1 + 4k frames); the shown crops
of the previous segment on the same face track, when `factory dub` gives them, are the first
window's clean motion frames, so the lips continue across segments. The sampler's steps, shift,
CFG scales and the LoRA experts' flow-time ranges (lip [0.4, 0.8], texture [0, 0.3]) are the
folder's `settings` (the recipe's eval section wrote them).

The editor re-renders the whole crop; what is pasted back is the lower face only (the generate
stage's alpha on the input's landmarks: dilated, feathered, the nose kept), so the rest of the
frame stays the user's pixels bit for bit and the low training resolution shows only where the
lips moved. Torch is imported in the methods: `import factory.dubbing` stays light.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from factory.config import ConfigError
from factory.dubbing.dubbers import register_dubber
from factory.dubbing.protocol import DubbedSegment
from factory.stages.generate import GenerateConfig, lower_face_alpha

NAME = "xdub-stage2"


class XDubDubber:
    name = NAME
    fps, sample_rate = 25, 16000  # the pairs' timeline: 640 samples of audio per frame
    crop_size = 256  # ingest's crop, as the pairs were cut; the editor's resolution is a resize of it

    def __init__(self, folder: Path, config: dict[str, Any], compositing: GenerateConfig | None = None):
        self.folder, self.settings = folder, dict(config.get("settings") or {})
        self.compositing = compositing or GenerateConfig()
        editor = _read_json(folder / config.get("editor", "editor") / "config.json")
        r, m = editor.get("temporal_compression", 4), editor.get("motion_latent_frames", 2)
        self.motion_frames = 1 + r * (m - 1) if m else 0  # video frames in the editor's motion latents
        self.model = self.vae = self.audio = None
        self.device = "cpu"

    def setup(self, device: str) -> None:
        from factory.models.audio_features import AudioFeatures
        from factory.models.vae import VAE
        from factory.models.xdub_folder import load_editor_folder

        self.device = str(device)
        model, _, vae, audio = load_editor_folder(self.folder, key="--checkpoint")
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.vae = VAE(dataclasses.replace(vae, device=self.device), key="--checkpoint vae")
        self.audio = AudioFeatures(dataclasses.replace(audio, device=self.device), key="--checkpoint audio")

    def dub_segment(self, frames: np.ndarray, landmarks: np.ndarray, audio_16k: np.ndarray,
                    motion: np.ndarray | None, seed: int = 0) -> DubbedSegment:
        import torch

        from factory.models.xdub_stage2 import edit_long
        from factory.trainers.clip_data import video_tensor

        if self.model is None:
            self.setup("cpu")
        s, size = self.settings, frames.shape[1]
        resolution = int(s.get("resolution", 256))
        lead = self.motion_frames if motion is not None and len(motion) >= self.motion_frames > 0 else 0
        clip = np.concatenate([motion[len(motion) - lead:], frames]) if lead else frames
        feats = torch.from_numpy(self.audio.features_np(np.asarray(audio_16k)))  # (T, W, D)
        if lead:  # motion frames are clean context: their audio tokens repeat the first frame's
            feats = torch.cat([feats[:1].expand(lead, *feats.shape[1:]), feats])
        video = video_tensor(clip, resolution)[None].to(self.device)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        cuda = self.device.startswith("cuda")
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out = edit_long(self.model, self.vae, video, feats[None].to(self.device),
                            segment_frames=int(s.get("segment_frames", 25)), steps=int(s.get("steps", 25)),
                            shift=float(s.get("shift", 5.0)), audio_guidance=float(s.get("audio_guidance", 1.0)),
                            reference_guidance=float(s.get("reference_guidance", 1.0)),
                            expert_ranges=s.get("expert_ranges"), generator=generator,
                            first_motion="source" if lead else "generate")
        pixels = ((out[0, :, lead:].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        rendered = pixels.permute(1, 2, 3, 0).cpu().numpy()
        if resolution != size:
            rendered = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in rendered])
        alpha = lower_face_alpha(landmarks, landmarks, size, self.compositing.feather_sigma,
                                 self.compositing.mask_dilation)
        return DubbedSegment(rendered, alpha)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    if not path.is_file():
        raise ConfigError(f"--checkpoint {str(path.parent.parent)!r}: no {path.parent.name}/config.json "
                          f"(an incomplete {NAME} folder)")
    return json.loads(path.read_text())


@register_dubber(NAME)
def load_xdub(folder: Path | None, config: dict[str, Any]) -> XDubDubber:
    if folder is None:
        raise ConfigError(f"{NAME} is learned: give --checkpoint DIR (a `factory train-dubber` run's loop.out/final)")
    return XDubDubber(folder, config)
