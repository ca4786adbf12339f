"""The training recipe of the `dit_inpainter` generator (X-Dub Stage I): self-supervised
reconstruction of the masked lower face of ingested clips, in a video VAE's latent space.

Each batch of the clip dataset (factory/trainers/clip_data.py: target segment, face and lip masks,
reference frames of the same video, Whisper windows of the segment's own audio) is encoded by the
frozen VAE (`prepare_latents`) and scored by the mask-weighted flow-matching loss
(`flow_matching_loss`, factory/models/flow_matching.py). Only the DiT trains; the VAE and the
audio encoder are frozen and live on the recipe, built lazily in each process (so the recipe
pickles cheaply into Ray Train workers and checkpoints hold the DiT alone).

Held-out evaluation samples clips of videos never trained on and measures the mouth region
(the lip mask) of the composited render against the real frames, beside two baselines a useful
model must beat: the masked input (the mouth left grey) and a reference frame's mouth pasted in,
and the VAE's own reconstruction (the best a latent model can do). It also measures how much
the mouth changes when the audio is swapped for another clip's, against re-sampling the noise:
lips that follow the audio change more with the audio than with the noise.

`save_pretrained` writes a generator folder (factory/generators/dit_inpainter.py) that
`generate.generator=dit_inpainter generate.weights=<loop.out>/final` loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from factory.config import ConfigError
from factory.models.audio_features import AudioFeatureConfig, AudioFeatures
from factory.models.dit_inpainter import TINY_DIT, DiTInpainter, prepare_latents
from factory.models.flow_matching import flow_matching_loss, sample
from factory.models.audio_features import TINY_WHISPER
from factory.models.vae import TINY as TINY_VAE
from factory.models.vae import VAE, VAEConfig
from factory.trainers.clip_data import ClipDataConfig, ClipDataset, check_config, collate, data_loader
from factory.trainers.loop import LoopConfig, Recipe, unwrap

# The DiT's shapes; latent channels, audio width/window, references and temporal compression come
# from the VAE, the audio encoder and the data (so they always match). Every key a YAML file may
# set is listed in the defaults: the config loader refuses keys a mapping does not already have.
DEFAULT_MODEL = {**{k: v for k, v in TINY_DIT.items() if k not in ("latent_channels", "audio_dim", "audio_window")},
                 "motion_latent_frames": 2, "audio_heads": None, "text_tokens": 1, "cross_attn_norm": True,
                 "qk_norm": "rms_norm_across_heads", "eps": 1e-6}


def default_vae() -> VAEConfig:
    """diffusers' tiny AutoencoderKLWan (random, seeded), latents normalised by mean/std lists the YAML sets."""
    z = TINY_VAE["wan"]["z_dim"]
    return VAEConfig(kind="wan", tiny={**TINY_VAE["wan"], "latents_mean": [0.0] * z, "latents_std": [1.0] * z})
DERIVED = ("latent_channels", "audio_dim", "audio_window", "num_reference_frames", "temporal_compression")


# 1. settings --------------------------------------------------------------------------------

@dataclass
class DiTLossConfig:
    lambda_face: float = 1.0  # extra weight of the face region (X-Dub: mask-weighted loss)
    lambda_lip: float = 1.0  # extra weight of the lips
    shift: float = 5.0  # flow-time shift of the training times (X-Dub Eq. 2)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    audio_drop_prob: float = 0.1  # samples trained without audio (the unconditional branch of CFG)
    motion_drop_prob: float = 0.2  # samples trained without clean motion frames (a clip's first segment)


@dataclass
class DiTEvalConfig:
    samples: int = 8  # held-out segments evaluated (the first ones, in order)
    batch_size: int = 4
    steps: int = 25  # sampler steps (also the exported generator's default)
    guidance_scale: float = 1.0  # audio CFG
    shift: float = 5.0
    first_motion: str = "generate"  # "generate": render the whole segment; "source": its first 5 frames real
    audio_swap: bool = True  # also measure the change from swapped audio vs re-sampled noise (2 more samplings)


@dataclass
class DiTInpainterRecipeConfig:
    generator: str = "dit_inpainter"
    clip_stores: list[str] = field(default_factory=list)  # folders written by `factory ingest`
    data: ClipDataConfig = field(default_factory=ClipDataConfig)  # its clip_stores: the key above
    vae: VAEConfig = field(default_factory=default_vae)  # the frozen video VAE (vae.path: a local one)
    audio: AudioFeatureConfig = field(default_factory=lambda: AudioFeatureConfig(tiny=dict(TINY_WHISPER), window=2))
    model: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_MODEL))  # DiTInpainter kwargs
    wan_path: str | None = None  # a local Wan2.2-TI2V-5B diffusers folder: start from its transformer
    gradient_checkpointing: bool = False
    loss: DiTLossConfig = field(default_factory=DiTLossConfig)
    eval: DiTEvalConfig = field(default_factory=DiTEvalConfig)
    face_mask_grow: int = 0  # pixels (at data.resolution) the face mask is grown by, for training and evaluation:
    # it must cover the jaw at its widest, or the background shows where the chin went (the mouth's opening)
    loader_workers: int = 0  # DataLoader worker processes (the audio encoder runs in them, on CPU)
    latent_cache: int = 4096  # latents kept in memory, by content (the frozen VAE is the CPU bottleneck); 0: none
    loop: LoopConfig = field(default_factory=LoopConfig)


def check(cfg: DiTInpainterRecipeConfig) -> None:
    if cfg.vae.kind != "wan":
        raise ConfigError(f"config key 'vae.kind': the DiT inpainter works in a video VAE's latents ('wan'), "
                          f"not {cfg.vae.kind!r}")
    check_config(data_config(cfg), prefix="data.")
    for key in DERIVED:
        if key in cfg.model:
            raise ConfigError(f"config key 'model.{key}' is set from the VAE, the audio encoder and the data; "
                              "remove it")
    if cfg.eval.first_motion not in ("generate", "source"):
        raise ConfigError(f"config key 'eval.first_motion' must be 'generate' or 'source', not {cfg.eval.first_motion!r}")
    for key in ("audio_drop_prob", "motion_drop_prob"):
        if not 0 <= getattr(cfg.loss, key) <= 1:
            raise ConfigError(f"config key 'loss.{key}' must lie in [0, 1]")


def data_config(cfg: DiTInpainterRecipeConfig) -> ClipDataConfig:
    stores = cfg.clip_stores or cfg.data.clip_stores
    if not stores:
        raise ConfigError("config key 'clip_stores' is empty: give folders written by `factory ingest`")
    return dataclasses.replace(cfg.data, clip_stores=list(stores))


# 2. batches that resume exactly ------------------------------------------------------------

class ClipBatches:
    """Endless collated batches of a ClipDataset, with the position the loop checkpoints."""

    def __init__(self, dataset: ClipDataset, num_workers: int):
        self.dataset, self.num_workers, self.position = dataset, num_workers, dataset.position

    def __iter__(self) -> "ClipBatches":
        # the DataLoader's iterator now, not at the first batch: it draws its base seed from the
        # global RNG, which the loop restores only after this (see loop.ResumableBatches)
        self.iterator = iter(data_loader(self.dataset, self.num_workers))
        return self

    def __next__(self) -> dict[str, Any]:
        batch = next(self.iterator)
        self.position = int(batch["position"][-1]) + 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {**self.dataset.state_dict(), "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)
        self.position = self.dataset.position


class CachedVAE:
    """A frozen VAE whose encodings are kept in memory by content: each clip is encoded on its
    own (batch of one), so a cached latent is bit for bit the one a fresh encoding gives, and a
    resumed run computes what an uninterrupted one does. `decode` passes through."""

    def __init__(self, vae: VAE, size: int):
        self.vae, self.size, self.entries = vae, size, OrderedDict()

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        return self.encode(video)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        out = []
        for item in video:
            key = hashlib.blake2b(item.detach().cpu().numpy().tobytes(), digest_size=16).hexdigest() + str(tuple(item.shape))
            z = self.entries.get(key)
            if z is None:
                z = self.vae.encode(item[None])[0]
                if self.size:
                    self.entries[key] = z
                    if len(self.entries) > self.size:
                        self.entries.popitem(last=False)
            else:
                self.entries.move_to_end(key)
            out.append(z)
        return torch.stack(out)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents)


class _Unwrapped:
    """The DiT as flow_matching_loss sees it: the (maybe DDP-wrapped) module's forward, so DDP
    syncs gradients, and the inner model's config and dtype."""

    def __init__(self, model: torch.nn.Module):
        self.model, inner = model, unwrap(model)
        self.config, self.dtype = inner.config, inner.dtype

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)


# 3. the recipe ------------------------------------------------------------------------------

class DiTInpainterRecipe(Recipe):
    name = "dit_inpainter"
    Config = DiTInpainterRecipeConfig
    free_keys = frozenset({"eval", "loader_workers", "latent_cache"})  # they change no weight

    def __init__(self, config: DiTInpainterRecipeConfig):
        check(config)
        super().__init__(config)
        self._vae: VAE | None = None
        self._cached: CachedVAE | None = None
        self._audio: AudioFeatures | None = None

    def __getstate__(self) -> dict[str, Any]:  # Ray ships the settings; each process builds its models
        return {**self.__dict__, "_vae": None, "_cached": None, "_audio": None}

    # -- frozen parts, built once per process --

    def vae(self, device: torch.device | str = "cpu") -> VAE:
        if self._vae is None or str(self._vae.device) != str(torch.device(device)):
            config = self.config.vae
            if config.path is None and config.tiny is None and self.config.wan_path is None:
                raise ConfigError("config key 'wan_path' is not set: give a local Wan2.2-TI2V-5B diffusers folder "
                                  "(its vae/ is the VAE), or set 'vae.path' (or 'vae.tiny' for a random test VAE)")
            if config.path is None and config.tiny is None:
                config = dataclasses.replace(config, path=self.config.wan_path, subfolder=config.subfolder or "vae")
            self._vae = VAE(dataclasses.replace(config, device=str(device)), key="vae")
            self._cached = None
        return self._vae

    def cached_vae(self, device: torch.device | str = "cpu") -> "CachedVAE":
        vae = self.vae(device)
        if self._cached is None:
            self._cached = CachedVAE(vae, self.config.latent_cache)
        return self._cached

    def audio_encoder(self) -> AudioFeatures:
        """On CPU: it runs in the data loader (its workers, when loader_workers > 0)."""
        if self._audio is None:
            self._audio = AudioFeatures(dataclasses.replace(self.config.audio, device="cpu"), key="audio")
        return self._audio

    def build_model(self, device: torch.device) -> torch.nn.Module:
        cfg = self.config
        if cfg.wan_path is not None and not (Path(cfg.wan_path) / "transformer" / "config.json").is_file():
            raise ConfigError(f"config key 'wan_path' = {cfg.wan_path!r}: no transformer/config.json there "
                              "(a local diffusers Wan folder, e.g. Wan2.2-TI2V-5B-Diffusers)")
        vae, audio = self.vae(device), self.audio_encoder()
        derived = dict(latent_channels=vae.latent_channels, audio_dim=audio.dim, audio_window=audio.window,
                       num_reference_frames=cfg.data.reference_frames,
                       temporal_compression=vae.temporal_factor)
        if cfg.wan_path is not None:
            derived.pop("latent_channels")
            extra = {k: v for k, v in cfg.model.items() if k not in _wan_shape_keys()}
            model = DiTInpainter.from_wan(cfg.wan_path, key="wan_path", **derived, **extra)
            if model.config.latent_channels != vae.latent_channels:
                raise ConfigError(f"config key 'wan_path': its transformer has {model.config.latent_channels} "
                                  f"latent channels, the VAE (config key 'vae') {vae.latent_channels}")
        else:
            model = DiTInpainter(**{**cfg.model, **derived})
        if cfg.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        return model.to(device)

    def train_batches(self, batch_size: int, rank: int, world_size: int, seed: int):
        dataset = ClipDataset(data_config(self.config), "train", rank=rank, world_size=world_size,
                              batch_size=batch_size, epochs=None, audio_encoder=self.audio_encoder())
        if not dataset.samples:
            raise ConfigError(f"no training segments of {self.config.data.segment_frames} frames in clip_stores "
                              f"(after holding out data.heldout_share={self.config.data.heldout_share} of the videos)")
        return ClipBatches(dataset, self.config.loader_workers)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], step: int):
        dit = unwrap(model)
        batch = grow_face_mask(batch, self.config.face_mask_grow)
        latents = prepare_latents(batch, self.cached_vae(batch["target"].device), dit.config.temporal_compression)
        c = self.config.loss
        loss = flow_matching_loss(_Unwrapped(model), latents, lambda_face=c.lambda_face, lambda_lip=c.lambda_lip,
                                  shift=c.shift, logit_mean=c.logit_mean, logit_std=c.logit_std,
                                  audio_drop_prob=c.audio_drop_prob, motion_drop_prob=c.motion_drop_prob)
        return loss, {}

    # -- held-out evaluation --

    def heldout(self) -> ClipDataset:
        return ClipDataset(data_config(self.config), "heldout", audio_encoder=self.audio_encoder())

    def evaluate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        dataset = self.heldout()
        n = min(self.config.eval.samples, len(dataset.samples))
        if n == 0:
            return {}
        batches = [grow_face_mask(collate([dataset.load(i) for i in range(lo, min(n, lo + self.config.eval.batch_size))]),
                                  self.config.face_mask_grow)
                   for lo in range(0, n, self.config.eval.batch_size)]
        return evaluate_mouth(unwrap(model), self.cached_vae(device), batches, self.config.eval, self.loop.seed, device)

    # -- export --

    def generator(self, model: torch.nn.Module, device: torch.device | str = "cpu"):
        """The trained DiT as a `dit_inpainter` generator (settings from the data and eval keys)."""
        from factory.generators.dit_inpainter import DiTInpainterGenerator, DiTInpainterSettings

        e = self.config.eval
        settings = DiTInpainterSettings(steps=e.steps, guidance_scale=e.guidance_scale, shift=e.shift,
                                        resolution=self.config.data.resolution,
                                        segment_frames=self.config.data.segment_frames)
        return DiTInpainterGenerator(settings, dit=unwrap(model), vae=self.vae(device), audio=self.audio_encoder())

    def save_pretrained(self, model: torch.nn.Module, path: Path) -> None:
        self.generator(model, next(unwrap(model).parameters()).device).save_pretrained(path)


def grow_face_mask(batch: dict[str, Any], pixels: int) -> dict[str, Any]:
    """The batch with its (B, 1, T, H, W) face mask dilated by `pixels` (a square of side 2p+1)."""
    if pixels <= 0:
        return batch
    k = 2 * pixels + 1
    grown = torch.nn.functional.max_pool3d(batch["face_mask"], (1, k, k), stride=1, padding=(0, pixels, pixels))
    return {**batch, "face_mask": grown}


def _wan_shape_keys() -> set[str]:
    from factory.models.dit_inpainter import WAN_KEYS

    return set(WAN_KEYS) | {"latent_channels"}


# 4. mouth metrics ---------------------------------------------------------------------------

def _region_l1_mse(x: torch.Tensor, target: torch.Tensor, region: torch.Tensor, scale: float = 0.5) -> tuple[float, float]:
    """Mean absolute and squared error of scale * (x - target) inside `region` (B, 1, ...), per
    channel (pixels in [-1, 1]: scale 0.5 gives [0, 1] units)."""
    diff = (x - target) * scale * region
    count = region.sum() * x.shape[1]
    return float(diff.abs().sum() / count), float((diff ** 2).sum() / count)


def psnr(mse: float) -> float:
    return 10 * math.log10(1 / max(mse, 1e-10))


@torch.no_grad()
def evaluate_mouth(dit: DiTInpainter, vae: CachedVAE, batches: list[dict[str, Any]], cfg: DiTEvalConfig, seed: int,
                   device: torch.device) -> dict[str, float]:
    """Per held-out segment (one sampler call each, as generate_long does for one segment):

    - mouth_l1_* / mouth_psnr_*: pixels in the lip mask, [0, 1] units, of the render composited on
      the face mask (dit), the masked input (masked: the mouth left grey), a reference frame's
      lower face pasted in (reference), and the VAE's reconstruction of the real frames (vae: the
      floor of any latent model; a random test VAE's is poor);
    - latent_l1_*: the same comparison in the VAE's latent space (lip cells), where a random VAE
      does not blur the verdict: the sampled latents vs the masked input's and the reference's;
    - with cfg.audio_swap, latent_change_audio / latent_change_noise (and mouth_change_*): how far
      the lip region moves when another clip's audio drives it, and when only the noise changes;
      latent_l1_dit_swapped: the render driven by the other clip's audio against the real latents.
    Motion frames (first_motion="source") are context, not scored."""
    r = dit.config.temporal_compression
    m = dit.config.motion_latent_frames if cfg.first_motion == "source" else 0
    skip = 1 + r * (m - 1) if m else 0  # video frames behind the clean motion latents
    feats = [b["audio_features"] for b in batches]
    swapped = feats[1:] + feats[:1] if len(batches) > 1 else [f.roll(1, dims=0) for f in feats]
    can_swap = cfg.audio_swap and sum(len(f) for f in feats) > 1
    sums: dict[str, list[float]] = {}

    def add(name: str, value: float, weight: float) -> None:
        sums.setdefault(name, [0.0, 0.0])
        sums[name][0] += value * weight
        sums[name][1] += weight

    index = 0
    for batch, other in zip(batches, swapped):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        frames, face, refs = batch["target"], batch["face_mask"], batch["references"]
        b = len(frames)
        other = (other if len(other) >= b else torch.cat([other, feats[0]]))[:b].to(device)
        z = prepare_latents(batch, vae, r)
        motion = z.target[:, :, :m] if m else None

        def sample_latents(audio: torch.Tensor, noise_seed: int) -> torch.Tensor:
            gens = [torch.Generator("cpu").manual_seed(noise_seed * 100_003 + index + i) for i in range(b)]
            return sample(dit, z.background, z.mask, z.references, audio, motion=motion, steps=cfg.steps,
                          guidance_scale=cfg.guidance_scale, shift=cfg.shift, generator=gens)

        kept = frames * (1 - face)
        pasted = kept + refs[:, :, :1] * face  # the first reference frame's lower face
        ours = sample_latents(batch["audio_features"], seed)
        latents = {"dit": ours, "masked": z.background, "reference": vae.encode(pasted)}
        lip_cells = z.lip_weight[:, :, m:]
        for name, x in latents.items():
            add(f"latent_l1_{name}", _region_l1_mse(x[:, :, m:], z.target[:, :, m:], lip_cells, 1.0)[0],
                float(lip_cells.sum()))

        lip, real = batch["lip_mask"][:, :, skip:], frames[:, :, skip:]
        render = kept + vae.decode(ours).to(frames.dtype) * face
        pixels = {"dit": render, "masked": kept, "reference": pasted,
                  "vae": kept + vae.decode(z.target).to(frames.dtype) * face}
        weight = float(lip.sum())
        for name, x in pixels.items():
            l1, mse = _region_l1_mse(x[:, :, skip:], real, lip)
            add(f"mouth_l1_{name}", l1, weight)
            add(f"mouth_mse_{name}", mse, weight)
        if can_swap:
            for name, changed in (("audio", sample_latents(other, seed)),
                                  ("noise", sample_latents(batch["audio_features"], seed + 1))):
                add(f"latent_change_{name}", _region_l1_mse(changed[:, :, m:], ours[:, :, m:], lip_cells, 1.0)[0],
                    float(lip_cells.sum()))
                if name == "audio":  # lips that follow the audio fit the real mouth worse with the wrong audio
                    add("latent_l1_dit_swapped", _region_l1_mse(changed[:, :, m:], z.target[:, :, m:], lip_cells, 1.0)[0],
                        float(lip_cells.sum()))
                moved = kept + vae.decode(changed).to(frames.dtype) * face
                add(f"mouth_change_{name}", _region_l1_mse(moved[:, :, skip:], render[:, :, skip:], lip)[0], weight)
        index += b
    metrics = {k: s / max(w, 1e-9) for k, (s, w) in sums.items()}
    for name in pixels:
        metrics[f"mouth_psnr_{name}"] = psnr(metrics.pop(f"mouth_mse_{name}"))
    return metrics
