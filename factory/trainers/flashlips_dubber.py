"""The trained FlashLips dubber: a `flashlips-refine` lip_flow run's final folder, used to dub video.

    dubber = FlashLipsDubber.from_pretrained("runs/flashlips_flow/final").to("cuda")
    frames = dubber.dub_segment(frames, landmarks, audio_16k)

One segment, no mask, two passes: the lip-pose flow model (factory/models/lip_pose_flow.py) draws
the segment's lip poses from wav2vec 2.0 windows of the new audio and K reference poses read from
the segment's own frames (evenly spaced: the speaker as the video shows them); then the refined
latent editor (factory/models/latent_editor.py) redraws every whole frame toward its pose, with
evenly spaced frames of the segment as its references. Pasting the crops back into the video is
the caller's job. The sampler's noise comes from `settings.seed`: the same input gives the same
frames. `motion` (frames already dubbed before the segment) is accepted for the dubbers' common
call and not used: the FlashLips editor works frame by frame and has no motion input.

The folder (written by `FlashLipsRecipe.save_pretrained`):

    config.json   {"dubber": "flashlips-refine", "version", "settings": DubberSettings, "wav2vec": where
                  its weights live (path) or the tiny random config it was trained with}
    editor/       a latent_editor generator folder (the refined editor, its lip-pose encoder and VAE)
    lip_flow/     LipPoseFlow (diffusers save_pretrained; pose normalisation included)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DUBBER_NAME, VERSION = "flashlips-refine", "1"


@dataclass
class DubberSettings:
    resolution: int = 256  # the editor's frame side (what it was trained at)
    reference_frames: int = 4  # segment frames given to the editor as references
    reference_poses: int = 4  # K: segment frames whose lip poses condition the flow model
    sample_steps: int = 10  # Euler steps of the lip-pose sampler
    batch_size: int = 16  # frames per editor pass
    seed: int = 0  # the sampler's noise


class FlashLipsDubber:
    def __init__(self, settings: DubberSettings, *, editor, lip_pose, vae, flow, audio):
        self.settings = settings
        self.editor, self.lip_pose, self.vae, self.flow, self.audio = editor, lip_pose, vae, flow, audio
        self.device = torch.device("cpu")

    @classmethod
    def from_pretrained(cls, folder: str | Path, key: str = "checkpoint", device: str | None = None
                        ) -> "FlashLipsDubber":
        from factory.config import ConfigError, build
        from factory.devices import pick_device
        from factory.generators.latent_editor import LatentEditorGenerator
        from factory.models.lip_pose_flow import LipPoseFlow
        from factory.models.wav2vec_features import Wav2VecFeatureConfig, Wav2VecFeatures

        folder = Path(folder)
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise ConfigError(f"{key} = {str(folder)!r} is not a flashlips-refine dubber folder (no config.json); "
                              "it is the final/ folder of a `flashlips-refine` run with stage: lip_flow")
        config = json.loads(config_file.read_text())
        if config.get("dubber") != DUBBER_NAME:
            raise ConfigError(f"{key} = {str(folder)!r} holds {config.get('dubber') or config.get('generator')!r}, "
                              f"not a {DUBBER_NAME} dubber (train one with stage: lip_flow)")
        for part in ("editor", "lip_flow"):
            if not (folder / part / "config.json").is_file():
                raise ConfigError(f"{key} = {str(folder)!r} has no {part}/ folder: not a complete dubber folder")
        settings = build(DubberSettings, config.get("settings") or {}, prefix=f"{key}/config.json:")
        device = torch.device(device or pick_device())
        editor = LatentEditorGenerator.from_pretrained(folder / "editor", key=f"{key}/editor")
        audio = Wav2VecFeatures(build(Wav2VecFeatureConfig, {**config["wav2vec"], "device": str(device)},
                                      prefix=f"{key}/config.json: wav2vec."), key=f"{key}/config.json: wav2vec")
        dubber = cls(settings, editor=editor.editor, lip_pose=editor.lip_pose, vae=editor.vae,
                     flow=LipPoseFlow.from_pretrained(folder / "lip_flow"), audio=audio)
        return dubber.to(device)

    def to(self, device) -> "FlashLipsDubber":
        """Models to `device`, eval mode, no gradients (the audio encoder stays where it was built)."""
        self.device = torch.device(device)
        for model in (self.editor, self.lip_pose, self.vae, self.flow):
            model.to(self.device).eval().requires_grad_(False)
        return self

    # -- the two passes --

    @torch.no_grad()
    def lip_poses(self, audio_16k: np.ndarray, reference_poses: torch.Tensor) -> torch.Tensor:
        """(T * 640,) audio and (K, P) reference poses -> (T, P) poses drawn by the flow model."""
        audio = torch.as_tensor(np.asarray(audio_16k, np.float32))[None]
        windows = self.audio(audio).to(self.device)
        generator = torch.Generator(device="cpu").manual_seed(self.settings.seed)
        noise = torch.randn(1, windows.shape[1], self.flow.config.pose_dim, generator=generator)
        return self.flow.sample(windows, reference_poses[None].to(self.device), self.settings.sample_steps,
                                noise=noise)[0]

    @torch.no_grad()
    def dub_segment(self, frames: np.ndarray, landmarks: np.ndarray, audio_16k: np.ndarray,
                    motion: np.ndarray | None = None) -> np.ndarray:
        """frames (T, S, S, 3) uint8 aligned face crops, landmarks (T, 478, 2) Face Mesh points (or
        (T, 40, 2) mouth points) in crop pixels, audio_16k (A,) float in [-1, 1] or int16, ideally
        A = T * 640 (shorter is zero-padded, longer cut) -> (T, S, S, 3) uint8 crops whose lips say it."""
        import cv2

        from factory.faces.landmarks import MOUTH
        from factory.generators.latent_editor import to_tensor
        from factory.metrics.frames import evenly_spaced
        from factory.models.latent_editor import decode_latents, encode_frames

        s = self.settings
        t, crop = len(frames), frames.shape[1]
        if len(landmarks) != t:
            raise ValueError(f"frames and landmarks need the same length: {t}, {len(landmarks)}")
        if t == 0:
            return frames.copy()
        audio = np.asarray(audio_16k)
        audio = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
        audio = np.pad(audio[:t * 640], (0, max(0, t * 640 - len(audio))))
        points = landmarks[:, MOUTH] if landmarks.shape[1] != len(MOUTH) else landmarks
        mouth = torch.from_numpy(np.clip(points / crop, 0, 1).astype(np.float32)).to(self.device)
        x = to_tensor(frames, s.resolution).to(self.device)

        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with autocast:
            own = self.lip_pose(mouth, x).float()  # the segment's own poses: K of them are the references
            poses = self.lip_poses(audio, own[torch.from_numpy(evenly_spaced(t, s.reference_poses))])
            z_ref = encode_frames(self.vae, x[torch.from_numpy(evenly_spaced(t, s.reference_frames))])[None]
            out = []
            for i in range(0, t, s.batch_size):
                z_in = encode_frames(self.vae, x[i:i + s.batch_size])
                z_hat = self.editor(z_in, z_ref, poses[i:i + s.batch_size], frames_per_reference_set=len(z_in))
                out.append(decode_latents(self.vae, z_hat).float().clamp(-1, 1).cpu())
        video = ((torch.cat(out).permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        if s.resolution != crop:
            video = np.stack([cv2.resize(f, (crop, crop), interpolation=cv2.INTER_CUBIC) for f in video])
        return video
