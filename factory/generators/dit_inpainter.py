"""The learned X-Dub Stage I generator: the mask-based latent flow-matching DiT
(factory/models/dit_inpainter.py) re-renders the masked lower face for the alternative audio.

Per clip: the crop is resized to the resolution the model was trained at, the stage's mask says
what to render, the alternative clip's audio becomes Whisper windows (the lips must follow it),
reference frames of the real clip give identity and texture, and preceding real frames (when the
stage has them) are the first segment's motion frames. `generate_long` samples the clip in
motion-bridged 25-frame segments; the result is resized back to the crop and the stage composites
it (pixels outside the mask stay the real ones). Noise comes from one CPU generator per clip seeded
with the pair's seed, so an output does not depend on which clips share its batch or device.

A generator folder (`factory train-generator` writes one as loop.out/final):

    config.json   generator name, version, settings, and where the three models are
    dit/          the DiTInpainter (diffusers save_pretrained)
    vae/          the video VAE (AutoencoderKLWan), unless config.json records a local path
    audio/        the Whisper encoder and its feature extractor, unless a local path is recorded

Torch, diffusers and transformers are imported inside the methods: `import factory.generators`
stays light for the driver, which only needs the class's attributes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
import cv2
import numpy as np

from factory.generators.base import CONFIG_NAME, GenerationInput, Generator
from factory.generators.base import register as register_generator

DIT_DIR, VAE_DIR, AUDIO_DIR = "dit", "vae", "audio"


@dataclass
class DiTInpainterSettings:
    steps: int = 25  # Euler steps of the flow-matching sampler
    guidance_scale: float = 1.0  # audio classifier-free guidance (> 1: one more model call per step)
    shift: float = 5.0  # flow-time shift of the sampler (X-Dub: 5)
    resolution: int = 256  # square side the model runs at (the training resolution)
    segment_frames: int = 25  # frames per sampled segment (1 + 4k); 5 of them bridge to the previous one
    batch_size: int = 1  # clips of equal length sampled together
    first_motion: str = "source"  # "source": given motion frames start the clip; "generate": render all
    seed: int = 0  # mixed into every pair's seed (another value: other noise, still reproducible)


def _resize(frames: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    if frames.shape[1] == size:
        return frames
    return np.stack([cv2.resize(f, (size, size), interpolation=interpolation) for f in frames])


def _pick(frames: np.ndarray, n: int) -> np.ndarray:
    """n frames evenly spaced over `frames` (repeating when there are fewer)."""
    return frames[np.linspace(0, len(frames) - 1, n).round().astype(int)]


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or pad (repeating the last entry) along the first axis to n."""
    if len(x) >= n:
        return x[:n]
    return np.concatenate([x, np.repeat(x[-1:], n - len(x), 0)])


@register_generator
class DiTInpainterGenerator(Generator):
    name = "dit_inpainter"
    version = "1"
    Settings = DiTInpainterSettings
    reference_frames = 4  # X-Dub's N
    motion_frames = 5  # X-Dub's m: 2 latent frames of the causal video VAE
    needs_weights = True

    def __init__(self, settings: DiTInpainterSettings | None = None, *, dit=None, vae=None, audio=None):
        """`dit`: a DiTInpainter; `vae`: a factory.models.vae.VAEConfig (a local path or a tiny
        seeded config) or a VAE wrapper; `audio`: an AudioFeatureConfig or AudioFeatures. Without
        them the generator cannot render: load one with `from_pretrained` (generate.weights)."""
        super().__init__(settings)
        if self.settings.first_motion not in ("source", "generate"):
            from factory.config import ConfigError

            raise ConfigError("config key 'generate.settings.first_motion' must be 'source' or 'generate', "
                              f"not {self.settings.first_motion!r}")
        self.dit, self.vae, self.audio = dit, vae, audio
        self.device = None

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def tiny(cls, seed: int = 0, resolution: int = 32, **settings) -> "DiTInpainterGenerator":
        """A tiny randomly initialised generator (tests, benchmarks): TINY_DIT, diffusers' tiny
        Wan VAE and a tiny Whisper encoder, all seeded, so two calls build the same generator.
        The DiT's zero-initialised conditioning paths are perturbed so background, mask and audio
        all reach its output (an untrained DiT ignores them)."""
        import torch

        from factory.models.audio_features import AudioFeatureConfig, AudioFeatures
        from factory.models.dit_inpainter import TINY_DIT, DiTInpainter
        from factory.models.vae import VAEConfig

        audio = AudioFeatures(AudioFeatureConfig(tiny={}, window=2, device="cpu", seed=seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            dit = DiTInpainter(**{**TINY_DIT, "latent_channels": 16, "audio_dim": audio.dim, "audio_window": 2})
            with torch.no_grad():
                for p in [dit.transformer.patch_embedding.weight, *(a.to_out.weight for a in dit.audio_attention)]:
                    p.normal_(0, 0.05)
        settings = {"steps": 2, "resolution": resolution, "segment_frames": 9, **settings}
        return cls(DiTInpainterSettings(**settings), dit=dit.eval(),
                   vae=VAEConfig(kind="wan", tiny={}, seed=seed, device="cpu"), audio=audio)

    # -- weights: a folder of three models -----------------------------------------------------

    def save_pretrained(self, path: str | Path) -> None:
        from factory.files import atomic_write
        from factory.models.audio_features import save_audio_entry
        from factory.models.vae import save_vae_entry

        if self.dit is None:
            raise ValueError("this dit_inpainter has no model to save (load one with from_pretrained)")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.dit.save_pretrained(path / DIT_DIR, safe_serialization=True)
        vae_entry = save_vae_entry(self.vae, path, VAE_DIR)
        audio_entry = save_audio_entry(self.audio, path, AUDIO_DIR)
        config = {"generator": self.name, "version": self.version, "settings": dataclasses.asdict(self.settings),
                  "vae": vae_entry, "audio": audio_entry, "dit": DIT_DIR}
        atomic_write(path / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True))

    @classmethod
    def from_pretrained(cls, path: str | Path, key: str = "generate.weights", settings=None) -> "DiTInpainterGenerator":
        from factory.config import ConfigError, build
        from factory.generators.base import read_generator_config
        from factory.models.audio_features import audio_config_from_entry
        from factory.models.dit_inpainter import DiTInpainter
        from factory.models.vae import VAEConfig

        path = Path(path)
        config = read_generator_config(path, cls.name, key)
        for part in ("dit", "vae", "audio"):
            if part not in config:
                raise ConfigError(f"{key} = {str(path)!r}: {CONFIG_NAME} names no {part!r} model")
        if settings is None:
            settings = build(cls.Settings, config.get("settings") or {}, prefix=f"{key}/{CONFIG_NAME}:")

        def inside(p: str) -> str:  # relative paths are folders of this generator folder
            return str(path / p) if not Path(p).is_absolute() else p

        dit_dir = path / config["dit"]
        if not (dit_dir / "config.json").is_file():
            raise ConfigError(f"{key} = {str(path)!r}: no DiT in {dit_dir} (config.json missing)")
        dit = DiTInpainter.from_pretrained(dit_dir, local_files_only=True).eval()
        v = config["vae"]
        vae = VAEConfig(kind=v["kind"], path=inside(v["path"]), subfolder=v.get("subfolder"),
                        dtype=v.get("dtype", "float32"))
        audio = audio_config_from_entry(config["audio"], path)
        return cls(settings, dit=dit, vae=vae, audio=audio)

    # -- rendering -----------------------------------------------------------------------------

    def setup(self, device: str) -> None:
        """Move the DiT to `device` (the one Ray assigned, or "cpu") and load the VAE and the
        audio encoder there."""
        import torch

        from factory.config import ConfigError
        from factory.models.audio_features import AudioFeatureConfig, AudioFeatures
        from factory.models.vae import VAE, VAEConfig

        if self.dit is None:
            raise ConfigError(f"generator '{self.name}' is learned: set generate.weights to its folder "
                              "(`factory train-generator` writes one as loop.out/final)")
        self.device = str(device)
        self.dit.to(self.device).eval().requires_grad_(False)
        if isinstance(self.vae, VAEConfig):
            self.vae = VAE(dataclasses.replace(self.vae, device=self.device), key=f"{self.name}.vae")
        elif str(self.vae.device) != self.device:
            self.vae = VAE(dataclasses.replace(self.vae.config, device=self.device), model=self.vae.model)
        if isinstance(self.audio, AudioFeatureConfig):
            self.audio = AudioFeatures(dataclasses.replace(self.audio, device=self.device), key=f"{self.name}.audio")
        elif str(self.audio.device) != self.device:
            if self.audio.encoder is not None:  # kind mel has none
                self.audio.encoder.to(self.device)
            self.audio.device = torch.device(self.device)

    def generate_batch(self, inputs: list[GenerationInput]) -> list[np.ndarray]:
        if self.device is None:
            self.setup("cpu")
        out: list[np.ndarray | None] = [None] * len(inputs)
        by_length: dict[tuple, list[int]] = {}  # clips sampled together must share their frame count and motion
        for i, inp in enumerate(inputs):
            by_length.setdefault((len(inp.real_frames), self._motion(inp) is not None), []).append(i)
        size = self.settings.batch_size
        for group in by_length.values():
            for lo in range(0, len(group), size):
                chunk = group[lo:lo + size]
                for i, frames in zip(chunk, self._render([inputs[i] for i in chunk])):
                    out[i] = frames
        return out

    def _motion(self, inp: GenerationInput) -> np.ndarray | None:
        m = self.motion_frames
        if self.settings.first_motion != "source" or inp.motion_frames is None or len(inp.motion_frames) < m:
            return None
        return inp.motion_frames[-m:]

    def _render(self, inputs: list[GenerationInput]) -> list[np.ndarray]:
        """Clips of one frame count -> (T, S, S, 3) uint8 renders in their crops' sizes."""
        import torch

        from factory.models.flow_matching import generate_long

        r, n_refs = self.settings.resolution, self.dit.config.num_reference_frames
        frames, masks, audio, refs, gens, lead = [], [], [], [], [], 0
        for inp in inputs:
            t = len(inp.real_frames)
            motion = self._motion(inp)
            clip = inp.real_frames if motion is None else np.concatenate([motion, inp.real_frames])
            mask = np.asarray(inp.masks[:t], np.uint8)
            feats = _fit_length(self.audio.features_np(np.asarray(inp.alt_audio)), t)  # (T, W, D): the alt audio
            if motion is not None:  # motion frames are clean context: rendered nowhere, their audio a repeat
                lead = len(motion)
                mask = np.concatenate([np.zeros((lead, *mask.shape[1:]), np.uint8), mask])
                feats = np.concatenate([np.repeat(feats[:1], lead, 0), feats])
            ref = inp.reference_frames if inp.reference_frames is not None and len(inp.reference_frames) else inp.real_frames
            frames.append(_resize(clip, r, cv2.INTER_AREA))
            masks.append(_resize(mask, r, cv2.INTER_NEAREST))
            audio.append(feats)
            refs.append(_resize(_pick(ref, n_refs), r, cv2.INTER_AREA))
            gens.append(torch.Generator("cpu").manual_seed((int(inp.seed) + 1_000_003 * self.settings.seed) % 2**63))

        def video(x: list[np.ndarray]) -> torch.Tensor:  # (B, F, R, R, 3) uint8 -> (B, 3, F, R, R) in [-1, 1]
            return torch.from_numpy(np.stack(x)).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1).to(self.device)

        mask = torch.from_numpy(np.stack(masks)).float()[:, None].to(self.device)
        feats = torch.from_numpy(np.stack(audio)).float().to(self.device)
        cuda = self.device.startswith("cuda")
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            rendered = generate_long(self.dit, self.vae, video(frames), mask, feats, video(refs),
                                     segment_frames=self.settings.segment_frames, steps=self.settings.steps,
                                     guidance_scale=self.settings.guidance_scale, shift=self.settings.shift,
                                     generator=gens, first_motion="source" if lead else "generate")
        pixels = ((rendered[:, :, lead:].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        pixels = pixels.permute(0, 2, 3, 4, 1).cpu().numpy()
        return [_resize(p, inp.real_frames.shape[1], cv2.INTER_CUBIC) for p, inp in zip(pixels, inputs)]
