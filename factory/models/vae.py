"""One API over the VAEs the learned generators work in: a video VAE (Wan) and image VAEs.

- `wan`: diffusers' `AutoencoderKLWan`, causal in time: F frames (F = 4k + 1) -> (F - 1) / 4 + 1
  latent frames (the first frame alone, then 4 per latent). Latents are normalised per channel
  with the `latents_mean` / `latents_std` of its config, as Wan's pipelines do.
- `kl`: `AutoencoderKL` (Stable Diffusion's), `taesd`: `AutoencoderTiny`; each frame is encoded
  on its own, latents scaled as `(z - shift_factor) * scaling_factor`.

Every wrapper maps video (B, 3, F, H, W) in [-1, 1] to latents (B, C, F', H / s, W / s) and back.
Deterministic encoding (the posterior's mean, the default) makes latents cacheable: `LatentCache`
keeps them as .safetensors files named by the sample key under a folder per VAE id.

Read top to bottom: 1. settings, 2. loading (local folder or tiny config), 3. the wrapper,
4. the latent cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from factory.config import ConfigError, digest
from factory.devices import pick_device
from factory.files import atomic_path

KINDS = ("wan", "kl", "taesd")


# 1. settings --------------------------------------------------------------------------------

@dataclass
class VAEConfig:
    kind: str = "wan"  # "wan" (AutoencoderKLWan, video) | "kl" (AutoencoderKL) | "taesd" (AutoencoderTiny)
    path: str | None = None  # local folder written by save_pretrained (or a pipeline folder + subfolder)
    subfolder: str | None = None  # e.g. "vae" inside a diffusers pipeline folder
    tiny: Any = None  # a dict of constructor kwargs over TINY[kind]: a random tiny VAE (tests);
    # typed Any: the config loader refuses free keys inside a typed dict
    deterministic: bool = True  # encode to the posterior mean (cacheable), not a sample
    device: str | None = None  # null: cuda when present, else cpu
    dtype: str = "float32"  # "float32" | "bfloat16" | "float16"
    seed: int = 0  # initialises a tiny VAE, so its id names reproducible weights
    frame_chunk: int = 32  # image VAEs: frames per forward pass (bounds memory)


# Tiny configs: the Wan one is diffusers' own test config (MODELS.md); all downsample 8x spatially.
TINY: dict[str, dict[str, Any]] = {
    "wan": {"base_dim": 3, "z_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
            "temperal_downsample": [False, True, True]},
    "kl": {"block_out_channels": [8, 8, 16, 16], "down_block_types": ["DownEncoderBlock2D"] * 4,
           "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 1, "latent_channels": 4,
           "norm_num_groups": 4},
    "taesd": {"encoder_block_out_channels": [8, 8, 8, 8], "decoder_block_out_channels": [8, 8, 8, 8],
              "num_encoder_blocks": [1, 1, 1, 1], "num_decoder_blocks": [1, 1, 1, 1], "latent_channels": 4},
}


# 2. loading ---------------------------------------------------------------------------------

def _model_class(kind: str):
    import diffusers

    return {"wan": diffusers.AutoencoderKLWan, "kl": diffusers.AutoencoderKL, "taesd": diffusers.AutoencoderTiny}[kind]


def load_vae_model(config: VAEConfig, key: str = "vae") -> torch.nn.Module:
    if config.kind not in KINDS:
        raise ConfigError(f"config key '{key}.kind': one of {', '.join(KINDS)}, not {config.kind!r}")
    cls = _model_class(config.kind)
    if config.path is not None:
        folder = Path(config.path) / (config.subfolder or "")
        if not (folder / "config.json").is_file():
            raise ConfigError(f"config key '{key}.path': {folder} is not a local VAE folder (no config.json); "
                              f"place the {cls.__name__} weights there, or set '{key}.tiny' for a random test VAE")
        try:
            return cls.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, EnvironmentError) as exc:
            raise ConfigError(f"config key '{key}.path': cannot load {cls.__name__} from {folder}: {exc}") from None
    if config.tiny is not None:
        if not isinstance(config.tiny, dict):
            raise ConfigError(f"config key '{key}.tiny' must be a mapping of {cls.__name__} arguments ({{}}: the defaults)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return cls(**{**TINY[config.kind], **config.tiny})
    raise ConfigError(f"config key '{key}.path' is not set: give a local {cls.__name__} folder "
                      f"(or '{key}.tiny' for a random test VAE)")


# 3. the wrapper -----------------------------------------------------------------------------

class VAE:
    """`encode(video)` / `decode(latents)` with the same shapes and scaling whatever the VAE."""

    def __init__(self, config: VAEConfig, key: str = "vae", model: torch.nn.Module | None = None):
        self.config = config
        self.model = (model if model is not None else load_vae_model(config, key)).eval().requires_grad_(False)
        self.device = torch.device(config.device or pick_device())
        dtype = getattr(torch, config.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"config key '{key}.dtype': a torch dtype name, not {config.dtype!r}")
        self.dtype = dtype
        self.model.to(self.device, dtype)
        c = self.model.config
        if config.kind == "wan":
            self.latent_channels = c.z_dim
            self.spatial_factor = 2 ** (len(c.dim_mult) - 1) * (c.patch_size or 1)
            self.temporal_factor = 2 ** sum(c.temperal_downsample)
            self._mean = torch.tensor(c.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
            self._std = torch.tensor(c.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        else:
            self.latent_channels = c.latent_channels
            blocks = c.block_out_channels if config.kind == "kl" else c.encoder_block_out_channels
            self.spatial_factor = 2 ** (len(blocks) - 1)
            self.temporal_factor = 1
            self._scale = float(getattr(c, "scaling_factor", None) or 1.0)
            self._shift = float(getattr(c, "shift_factor", None) or 0.0)

    @property
    def id(self) -> str:
        """Names the weights: the folder (resolved) or the tiny config and its seed."""
        c = self.config
        source = {"path": str(Path(c.path).resolve()), "subfolder": c.subfolder} if c.path else \
            {"tiny": {**TINY[c.kind], **(c.tiny or {})}, "seed": c.seed}
        return f"{c.kind}-{digest({'kind': c.kind, 'dtype': c.dtype, **source})[:12]}"

    def latent_frames(self, frames: int) -> int:
        if self.config.kind != "wan":
            return frames
        if (frames - 1) % self.temporal_factor:
            raise ValueError(f"the Wan VAE needs {self.temporal_factor}k + 1 frames, not {frames}")
        return (frames - 1) // self.temporal_factor + 1

    @torch.no_grad()
    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> normalised latents (B, C, F', H/s, W/s), float32 on self.device."""
        self.latent_frames(video.shape[2])  # refuses a bad frame count before any work
        x = video.to(self.device, self.dtype)
        if self.config.kind == "wan":
            z = self._sample(self.model.encode(x).latent_dist, generator).float()
            return (z - self._mean.to(z.device)) / self._std.to(z.device)
        b, _, f, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * f, 3, h, w)
        z = torch.cat([self._encode_images(frames[i:i + self.config.frame_chunk], generator)
                       for i in range(0, b * f, self.config.frame_chunk)]).float()
        z = (z - self._shift) * self._scale
        return z.reshape(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()

    def _encode_images(self, images: torch.Tensor, generator) -> torch.Tensor:
        out = self.model.encode(images)
        if self.config.kind == "taesd":
            return out.latents  # AutoencoderTiny is deterministic
        return self._sample(out.latent_dist, generator)

    def _sample(self, dist, generator) -> torch.Tensor:
        return dist.mode() if self.config.deterministic else dist.sample(generator)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, F', h, w) -> video (B, 3, F, h*s, w*s) in [-1, 1], float32."""
        z = latents.to(self.device, torch.float32)
        if self.config.kind == "wan":
            z = z * self._std.to(z.device) + self._mean.to(z.device)
            video = self.model.decode(z.to(self.dtype)).sample
        else:
            b, c, f, h, w = z.shape
            z = (z.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w) / self._scale + self._shift).to(self.dtype)
            images = torch.cat([self.model.decode(z[i:i + self.config.frame_chunk]).sample
                                for i in range(0, b * f, self.config.frame_chunk)])
            video = images.reshape(b, f, *images.shape[1:]).permute(0, 2, 1, 3, 4)
        return video.float().clamp(-1, 1)

    def encode_cached(self, video: torch.Tensor, keys: list[str], cache: "LatentCache | None") -> torch.Tensor:
        """`encode`, reading and writing `cache` per sample key (e.g. the clip dataset's `key`)."""
        if cache is None:
            return self.encode(video)
        if not self.config.deterministic:
            raise ValueError("a latent cache needs deterministic encoding (vae.deterministic=true)")
        found = [cache.get(self.id, k) for k in keys]
        todo = [i for i, z in enumerate(found) if z is None]
        if todo:
            fresh = self.encode(video[todo])
            for i, z in zip(todo, fresh):
                cache.put(self.id, keys[i], z)
                found[i] = z
        return torch.stack([z.to(self.device) for z in found])


# 4. the latent cache ------------------------------------------------------------------------

class LatentCache:
    """Latents of one sample per .safetensors file: `<folder>/<vae id>/<sample key>.safetensors`,
    written atomically (a killed writer leaves no half file)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, vae_id: str, key: str) -> Path:
        return self.folder / vae_id / f"{re.sub(r'[^A-Za-z0-9._@-]', '_', key)}.safetensors"

    def get(self, vae_id: str, key: str) -> torch.Tensor | None:
        from safetensors.torch import load_file

        p = self.path(vae_id, key)
        return load_file(str(p))["latents"] if p.is_file() else None

    def put(self, vae_id: str, key: str, latents: torch.Tensor) -> None:
        from safetensors.torch import save_file

        p = self.path(vae_id, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(p, suffix=".tmp.safetensors") as tmp:
            save_file({"latents": latents.detach().to("cpu", torch.float32).contiguous()}, str(tmp))


def save_vae_entry(vae: "VAE | VAEConfig", folder: Path, subdir: str = "vae") -> dict[str, Any]:
    """The `vae` entry of a model folder's config.json: a local VAE is recorded by its path (large and
    unchanged), a tiny/random one is saved into folder/subdir."""
    import dataclasses

    config = vae.config if isinstance(vae, VAE) else vae
    if config.path is not None:
        entry = {"kind": config.kind, "path": str(Path(config.path).resolve()), "subfolder": config.subfolder}
    else:
        model = vae.model if isinstance(vae, VAE) else VAE(dataclasses.replace(config, device="cpu")).model
        model.save_pretrained(Path(folder) / subdir, safe_serialization=True)
        entry = {"kind": config.kind, "path": subdir, "subfolder": None}
    entry["dtype"] = config.dtype
    return entry
