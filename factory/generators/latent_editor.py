"""The FlashLips Stage 1 latent editor as a factory generator (`generate.generator=latent_editor`).

Each real frame is redrawn in one pass in an image VAE's latent space (factory/models/latent_editor.py):
its lower face is masked out, the editor fills it from reference frames of the same clip and a
lip pose read from the *alternative* clip's frame at the same index (its mouth landmarks,
normalised by its own crop as the clip dataset does, and its mouth crop), and the VAE decodes
it. The pose comes from the alternative clip in its own crop, so no registration onto the real
frame is needed. The stage composites the render back inside the mask.

A generator folder (written by `factory train-generator` as loop.out/final, or `save_pretrained`):

    config.json   generator name, version, settings, and where the VAE lives
    editor/       LatentEditor (diffusers save_pretrained)
    lip_pose/     LipPoseEncoder
    vae/          the image VAE (AutoencoderKL), unless config.json names a local VAE folder instead

No randomness at inference: the same input gives the same frames.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from factory.generators.base import CONFIG_NAME, GenerationInput, Generator
from factory.generators.base import register as register_generator

# a tiny random generator's models (tests, benches): 64 px frames -> 32 x 32 x 4 latents
TINY_VAE = {"block_out_channels": [16, 32], "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "layers_per_block": 1, "latent_channels": 4,
            "norm_num_groups": 4, "mid_block_add_attention": False}
TINY_EDITOR = {"latent_channels": 4, "lip_dim": 12, "ref_channels": 4, "num_references": 2,
               "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 4, "lip_embed_dim": 16}
TINY_LIP_POSE = {"num_landmarks": 40, "hidden_dim": 32, "crop_size": 16, "cnn_channels": [8, 16], "norm_num_groups": 4}


@dataclass
class LatentEditorSettings:
    resolution: int = 256  # frames are resized to this square side for the editor (the one it was trained at)
    batch_size: int = 16  # frames per editor pass
    reference_frames: int = 4  # real frames given as references (the stage picks them evenly spaced)


def to_tensor(frames: np.ndarray, size: int):
    """(T, S, S, 3) uint8 -> (T, 3, size, size) float32 in [-1, 1] (area-downsampled, as the clip dataset)."""
    import cv2
    import torch

    if frames.shape[1] != size:
        interp = cv2.INTER_AREA if frames.shape[1] > size else cv2.INTER_LINEAR
        frames = np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in frames])
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float() / 127.5 - 1


def mouth_landmarks(landmarks: np.ndarray, crop: int) -> np.ndarray:
    """(T, 478, 2) crop pixels -> (T, K, 2) Face Mesh mouth points in [0, 1], as the clip dataset gives them."""
    from factory.faces.landmarks import MOUTH

    return np.clip(landmarks[:, MOUTH] / crop, 0, 1).astype(np.float32)


@register_generator
class LatentEditorGenerator(Generator):
    name = "latent_editor"
    version = "1"
    Settings = LatentEditorSettings
    needs_weights = True

    def __init__(self, settings: LatentEditorSettings | None = None, *, editor=None, lip_pose=None, vae=None,
                 vae_source: dict[str, Any] | None = None):
        super().__init__(settings)
        self.editor, self.lip_pose, self.vae = editor, lip_pose, vae
        self.vae_source = vae_source  # {"path", "subfolder"} when the VAE is a local folder saved elsewhere
        self.device = "cpu"

    @property
    def reference_frames(self) -> int:  # what the stage passes as inp.reference_frames
        return self.settings.reference_frames

    # -- weights ---------------------------------------------------------------------------------

    @classmethod
    def tiny(cls, seed: int = 0, resolution: int = 64) -> "LatentEditorGenerator":
        """A tiny randomly initialised generator (its output conv made non-zero, so the lip pose
        changes the render): for tests and benches."""
        import torch
        from diffusers import AutoencoderKL

        from factory.models.latent_editor import LatentEditor
        from factory.models.lip_pose import LipPoseEncoder

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = AutoencoderKL(**TINY_VAE)
            editor, lip_pose = LatentEditor(**TINY_EDITOR), LipPoseEncoder(**TINY_LIP_POSE)
            torch.nn.init.normal_(editor.conv_out.weight, std=0.05)
        settings = LatentEditorSettings(resolution=resolution, batch_size=8,
                                        reference_frames=TINY_EDITOR["num_references"])
        return cls(settings, editor=editor, lip_pose=lip_pose, vae=vae)

    def save_pretrained(self, path: str | Path) -> None:
        from factory.files import atomic_write

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.editor.save_pretrained(path / "editor")
        self.lip_pose.save_pretrained(path / "lip_pose")
        if self.vae_source is None:
            self.vae.save_pretrained(path / "vae")
        config = {"generator": self.name, "version": self.version, "settings": dataclasses.asdict(self.settings),
                  "vae": self.vae_source}
        atomic_write(path / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True))

    @classmethod
    def from_pretrained(cls, path: str | Path, key: str = "generate.weights", settings=None) -> "LatentEditorGenerator":
        from factory.config import ConfigError, build
        from factory.generators.base import read_generator_config
        from factory.models.latent_editor import LatentEditor
        from factory.models.lip_pose import LipPoseEncoder
        from factory.models.vae import VAEConfig, load_vae_model

        path = Path(path)
        config = read_generator_config(path, cls.name, key)
        for part in ("editor", "lip_pose"):
            if not (path / part / "config.json").is_file():
                raise ConfigError(f"{key} = {str(path)!r} has no {part}/ folder: not a complete latent_editor folder")
        if settings is None:
            settings = build(cls.Settings, config.get("settings") or {}, prefix=f"{key}/{CONFIG_NAME}:")
        source = config.get("vae")
        if source is None:
            vae = load_vae_model(VAEConfig(kind="kl", path=str(path / "vae")), key=f"{key}/vae")
        else:
            vae = load_vae_model(VAEConfig(kind="kl", path=source["path"], subfolder=source.get("subfolder")),
                                 key=f"{key}/{CONFIG_NAME}: vae")
        return cls(settings, editor=LatentEditor.from_pretrained(path / "editor"),
                   lip_pose=LipPoseEncoder.from_pretrained(path / "lip_pose"), vae=vae, vae_source=source)

    # -- rendering -------------------------------------------------------------------------------

    def setup(self, device: str) -> None:
        """Models to `device`, eval mode, no gradients (edit_frames autocasts to bf16 on CUDA)."""
        if self.editor is None:
            from factory.config import ConfigError

            raise ConfigError("generator 'latent_editor' is learned: set generate.weights to its folder "
                              "(`factory train-generator` writes one as loop.out/final)")
        self.device = str(device)
        for model in (self.editor, self.lip_pose, self.vae):
            model.to(self.device).eval().requires_grad_(False)

    def generate_batch(self, inputs: list[GenerationInput]) -> list[np.ndarray]:
        return [self.generate(inp) for inp in inputs]

    def generate(self, inp: GenerationInput) -> np.ndarray:
        import cv2
        import torch

        from factory.metrics.frames import evenly_spaced
        from factory.models.latent_editor import edit_frames

        size, crop = self.settings.resolution, inp.real_frames.shape[1]
        n = min(len(inp.real_frames), len(inp.alt_frames))
        real = inp.real_frames[:n]
        refs = inp.reference_frames
        if refs is None or not len(refs):
            refs = real[evenly_spaced(n, self.settings.reference_frames)]
        masks = np.stack([cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
                          for m in inp.masks[:n]])
        with torch.no_grad():
            out = edit_frames(self.editor, self.lip_pose, self.vae, to_tensor(real, size),
                              torch.from_numpy(masks[:, None].astype(np.float32)), to_tensor(refs, size),
                              to_tensor(inp.alt_frames[:n], size),
                              torch.from_numpy(mouth_landmarks(inp.alt_landmarks[:n], inp.alt_frames.shape[1])),
                              batch_size=self.settings.batch_size)
        frames = ((out.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        if size != crop:
            frames = np.stack([cv2.resize(f, (crop, crop), interpolation=cv2.INTER_CUBIC) for f in frames])
        if n < len(inp.real_frames):  # a shorter alternative clip: the rest stays real
            frames = np.concatenate([frames, inp.real_frames[n:]])
        return frames
