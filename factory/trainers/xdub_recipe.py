"""The training recipe `xdub-stage2`: X-Dub Stage II, the mask-free editor, trained on the
factory's pairs (X-Dub §3.2-3.3, App. C). Input: the synthetic video + the real audio; target: the
real video (factory/models/xdub_stage2.py).

Timestep-adaptive multi-phase training, one run per phase (config key `phase`), each phase starting
from the previous one's folder (`init_from`):

    phase 1  every DiT parameter       t shift 5.0   flow matching
             init_from: a Stage I `dit_inpainter` generator folder (X-Dub starts Stage II there), or
             none (wan_path, or a random DiT from `model`)
    phase 2  the "lip" LoRA expert     t shift 1.5   flow matching + lambda_sync * SyncNet loss on the
             init_from: phase 1's final                single-step estimate x0 = z_t - min(t, 0.6) v
    phase 3  the "texture" LoRA expert t shift 0.2   flow matching; audio dropped with p = 0.5, and
             init_from: phase 2's final                on those silent samples lambda_identity * (1 - cos)
                                                       of identity embeddings vs the reference frames

    factory train-dubber configs/dubber_xdub_cpu.yaml phase=1 loop.out=runs/xdub/p1 init_from=runs/dit_cpu/final
    factory train-dubber configs/dubber_xdub_cpu.yaml phase=2 loop.out=runs/xdub/p2 init_from=runs/xdub/p1/final
    factory train-dubber configs/dubber_xdub_cpu.yaml phase=3 loop.out=runs/xdub/p3 init_from=runs/xdub/p2/final

One run per phase (rather than one run switching phases) keeps each run's trainable set fixed from
`build_model` on, which the loop's optimizer, EMA and DDP assume, and lets each phase have its own
steps and learning rate. The flow-time shifts, audio drop and tau_max default to the paper's values;
the auxiliary loss weights (lambda_sync 0.05, lambda_identity 0.1) are LatentSync-style values, the
paper's were not at hand. The SyncNet and the identity net are frozen and loaded from local paths
(tiny random ones in tests and the CPU demo).

Held-out evaluation samples held-out pairs with the experts routed by flow time and scores the
mouth region (real or synthetic lips) against the real frames, beside the baseline a useful editor
must beat: the synthetic input returned unchanged (and the VAE's own reconstruction, the floor).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from factory.config import ConfigError, to_dict
from factory.models.audio_features import TINY_WHISPER, AudioFeatureConfig, AudioFeatures
from factory.models.lora_experts import LoraExpertConfig, activate_expert, add_expert, expert_names, train_only
from factory.models.timestep_sampling import PHASE_SHIFT, TAU_MAX
from factory.models.vae import VAE, VAEConfig
from factory.models.xdub_folder import load_editor_folder, read_editor_config, save_editor_folder
from factory.models.xdub_stage2 import (XDubEditor, decode_with_grad, flow_step, prepare_pair_latents, sample_editor,
                                        silent_mean, weighted_flow_loss)
from factory.trainers.dit_recipe import DEFAULT_MODEL, CachedVAE, ClipBatches, _Unwrapped, _region_l1_mse, default_vae, psnr
from factory.trainers.dubber_metrics import (METRICS, SAMPLES_PER_FRAME, DubberScorer, EvalSyncNetConfig, TorchEmbedder,
                                             build_syncnet, check_metrics, try_build)
from factory.trainers.loop import LoopConfig, Recipe, unwrap

PHASE_PART = {1: "base", 2: "lip", 3: "texture"}
DERIVED = ("latent_channels", "audio_dim", "audio_window", "num_reference_frames", "temporal_compression")

from factory.trainers.pair_data import PairDataConfig, PairDataset, pair_loader


# 1. settings --------------------------------------------------------------------------------

@dataclass
class XDubLossConfig:
    shift: float | None = None  # flow-time shift; null: the phase's (5.0, 1.5, 0.2)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    lambda_face: float = 1.0  # extra flow-loss weight of the lower face
    lambda_lip: float = 1.0  # extra weight of the lips (real or synthetic: where the pair differs)
    audio_drop_prob: float | None = None  # null: 0.5 in phase 3 (the silent branch), else 0.1 (audio CFG)
    reference_drop_prob: float = 0.0  # samples without the reference (reference CFG)
    motion_drop_prob: float = 0.2  # samples without clean motion frames (a clip's first segment)
    tau_max: float = TAU_MAX  # x0 = z_t - min(t, tau_max) v for the auxiliary losses
    lambda_sync: float = 0.05  # phase 2
    lambda_identity: float = 0.1  # phase 3
    identity_frames: int = 4  # generated frames per sample the identity loss embeds

    def phase_shift(self, phase: int) -> float:
        return self.shift if self.shift is not None else PHASE_SHIFT[phase]

    def phase_audio_drop(self, phase: int) -> float:
        return self.audio_drop_prob if self.audio_drop_prob is not None else (0.5 if phase == 3 else 0.1)


@dataclass
class IdentityLossNetConfig:
    backend: str = "arcface"  # "arcface" (a local TorchScript or ONNX file at path) | "tiny" (random)
    path: str | None = None
    seed: int = 0


@dataclass
class XDubEvalConfig:
    samples: int = 8  # held-out pairs evaluated (the first ones, in order)
    batch_size: int = 4
    steps: int = 25  # sampler steps (also the exported folder's default)
    shift: float = 5.0  # sampler time shift
    audio_guidance: float = 1.0
    reference_guidance: float = 1.0
    motion: bool = True  # the real first frames as clean motion frames (as every segment after a clip's first)
    audio_swap: bool = True  # also sample with another held-out pair's audio, and with other noise: do the lips follow?
    # measurement metrics of the generated frames (factory/trainers/dubber_metrics.py): any of sync, csim,
    # lmd, psnr; [] for the mouth-region numbers only (the cheapest eval)
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    csim_frames: int = 4  # evenly spaced frames per segment the identity net embeds
    sync_max_offset: int = 15

    def __post_init__(self):
        check_metrics(self.metrics, "eval.metrics")


@dataclass
class XDubRecipeConfig:
    recipe: str = "xdub-stage2"
    phase: int = 1  # 1: all parameters; 2: the lip expert; 3: the texture expert (see the module docstring)
    init_from: str | None = None  # phase 1: a Stage I dit_inpainter generator folder (or null); 2-3: the last phase's
    manifests: list[str] = field(default_factory=list)  # pair manifests (or run folders); sets data.manifests
    data: PairDataConfig = field(default_factory=PairDataConfig)
    vae: VAEConfig = field(default_factory=default_vae)
    audio: AudioFeatureConfig = field(default_factory=lambda: AudioFeatureConfig(tiny=dict(TINY_WHISPER), window=2))
    model: dict[str, Any] = field(default_factory=lambda: {**DEFAULT_MODEL, "rope_shift": None})
    wan_path: str | None = None  # phase 1 with no init_from: start from a local Wan2.2-TI2V-5B folder
    gradient_checkpointing: bool = False
    lora: LoraExpertConfig = field(default_factory=LoraExpertConfig)
    loss: XDubLossConfig = field(default_factory=XDubLossConfig)
    syncnet: EvalSyncNetConfig = field(default_factory=EvalSyncNetConfig)  # a local SyncNet (or tiny)
    identity: IdentityLossNetConfig = field(default_factory=IdentityLossNetConfig)
    eval: XDubEvalConfig = field(default_factory=XDubEvalConfig)
    loader_workers: int = 0
    latent_cache: int = 4096  # latents kept in memory by content (the frozen VAE is the CPU bottleneck)
    loop: LoopConfig = field(default_factory=LoopConfig)


def check(cfg: XDubRecipeConfig) -> None:
    if cfg.phase not in PHASE_PART:
        raise ConfigError(f"config key 'phase' must be 1, 2 or 3, not {cfg.phase!r}")
    if cfg.phase > 1 and not cfg.init_from:
        raise ConfigError(f"config key 'init_from' is required in phase {cfg.phase}: the previous phase's "
                          "loop.out/final folder")
    if cfg.vae.kind != "wan":
        raise ConfigError(f"config key 'vae.kind': the editor works in a video VAE's latents ('wan'), not {cfg.vae.kind!r}")
    if (cfg.data.segment_frames - 1) % 4:
        raise ConfigError(f"config key 'data.segment_frames' must be 4k + 1, not {cfg.data.segment_frames}")
    for key in DERIVED:
        if key in cfg.model:
            raise ConfigError(f"config key 'model.{key}' is set from the VAE, the audio encoder and the data; remove it")
    for key in ("reference_drop_prob", "motion_drop_prob"):
        if not 0 <= getattr(cfg.loss, key) <= 1:
            raise ConfigError(f"config key 'loss.{key}' must lie in [0, 1]")
    if cfg.loss.audio_drop_prob is not None and not 0 <= cfg.loss.audio_drop_prob <= 1:
        raise ConfigError("config key 'loss.audio_drop_prob' must lie in [0, 1] or be null")
    if cfg.identity.backend not in ("arcface", "tiny"):
        raise ConfigError(f"config key 'identity.backend' must be 'arcface' or 'tiny', not {cfg.identity.backend!r}")


def data_config(cfg: XDubRecipeConfig) -> PairDataConfig:
    manifests = cfg.manifests or cfg.data.manifests
    if not manifests:
        raise ConfigError("config key 'manifests' is empty: give pair manifests written by `factory run`")
    return dataclasses.replace(cfg.data, manifests=list(manifests))


# 2. the recipe ------------------------------------------------------------------------------

class XDubRecipe(Recipe):
    name = "xdub-stage2"
    Config = XDubRecipeConfig
    free_keys = frozenset({"eval", "loader_workers", "latent_cache"})  # they change no weight

    def __init__(self, config: XDubRecipeConfig):
        check(config)
        super().__init__(config)
        self._vae = self._cached = self._audio = self._syncnet = self._identity = None

    def __getstate__(self) -> dict[str, Any]:  # Ray ships the settings; each process builds its models
        return {**self.__dict__, "_vae": None, "_cached": None, "_audio": None, "_syncnet": None, "_identity": None}

    @property
    def phase(self) -> int:
        return self.config.phase

    # -- frozen parts, built once per process --

    def vae(self, device: torch.device | str = "cpu") -> VAE:
        if self._vae is None or str(self._vae.device) != str(torch.device(device)):
            config = self.config.vae
            if config.path is None and config.tiny is None:
                if self.config.wan_path is None:
                    raise ConfigError("config key 'vae.path' is not set: give the Stage I VAE's local folder "
                                      "(or 'wan_path', whose vae/ is used; 'vae.tiny' for a random test VAE)")
                config = dataclasses.replace(config, path=self.config.wan_path, subfolder=config.subfolder or "vae")
            self._vae = VAE(dataclasses.replace(config, device=str(device)), key="vae")
            self._cached = None
        return self._vae

    def cached_vae(self, device: torch.device | str = "cpu") -> CachedVAE:
        vae = self.vae(device)
        if self._cached is None:
            self._cached = CachedVAE(vae, self.config.latent_cache)
        return self._cached

    def audio_encoder(self) -> AudioFeatures:
        if self._audio is None:
            self._audio = AudioFeatures(dataclasses.replace(self.config.audio, device="cpu"), key="audio")
        return self._audio

    def syncnet(self, device: torch.device):
        if self._syncnet is None:  # phase 2's loss and the eval's Sync-C/D share it
            self._syncnet = build_syncnet(self.config.syncnet, "syncnet", device)
        return self._syncnet

    def identity_net(self, device: torch.device):
        if self._identity is None:
            from factory.models.identity_net import load_identity_net

            c = self.config.identity
            self._identity = load_identity_net(c.backend, c.path, key="identity", seed=c.seed, device=device)
        return self._identity

    # -- the model --

    def latent_frames(self) -> int:
        return (self.config.data.segment_frames - 1) // 4 + 1

    def build_model(self, device: torch.device) -> torch.nn.Module:
        cfg = self.config
        vae, audio = self.vae(device), self.audio_encoder()
        frames = vae.latent_frames(cfg.data.segment_frames)
        shift = cfg.model.get("rope_shift")
        init = Path(cfg.init_from) if cfg.init_from else None
        if init is not None and (init / "dit" / "config.json").is_file():  # a Stage I generator folder
            if self.phase != 1:
                raise ConfigError(f"config key 'init_from' = {cfg.init_from!r} is a Stage I generator folder; phase "
                                  f"{self.phase} starts from the previous phase's xdub-stage2 folder")
            model = XDubEditor.from_stage1(init / "dit", frames, shift, key="init_from")
        elif init is not None:
            read_editor_config(init, "init_from")
            model, _, _, _ = load_editor_folder(init, key="init_from")
        elif cfg.wan_path is not None:
            extra = {k: v for k, v in cfg.model.items() if k in ("motion_latent_frames", "audio_heads", "text_tokens",
                                                               "rope_shift")}
            model = XDubEditor.from_wan(cfg.wan_path, key="wan_path", audio_dim=audio.dim, audio_window=audio.window,
                                        num_reference_frames=frames, temporal_compression=vae.temporal_factor, **extra)
        else:
            model = XDubEditor(**{**cfg.model, "latent_channels": vae.latent_channels, "audio_dim": audio.dim,
                                  "audio_window": audio.window, "num_reference_frames": frames,
                                  "temporal_compression": vae.temporal_factor})
        if (model.config.audio_dim, model.config.audio_window) != (audio.dim, audio.window):
            raise ConfigError(f"config key 'audio': the editor reads audio features of width {model.config.audio_dim}, "
                              f"{model.config.audio_window} a frame; the encoder gives {audio.dim}, {audio.window}")
        if model.config.num_reference_frames != frames or model.config.latent_channels != vae.latent_channels:
            raise ConfigError(f"config key 'init_from': the editor takes {model.config.num_reference_frames} latent "
                              f"frames of {model.config.latent_channels} channels; data.segment_frames and the VAE "
                              f"give {frames} of {vae.latent_channels}")
        part = PHASE_PART[self.phase]
        if part != "base":
            if part not in expert_names(model):
                add_expert(model, part, cfg.lora)
            activate_expert(model, part)
        else:
            activate_expert(model, None)
        train_only(model, part)
        if cfg.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        return model.to(device)

    # -- data --

    def train_batches(self, batch_size: int, rank: int, world_size: int, seed: int):
        dataset = PairDataset(data_config(self.config), "train", rank=rank, world_size=world_size,
                              batch_size=batch_size, audio_encoder=self.audio_encoder())
        return ClipBatches(dataset, self.config.loader_workers)  # works on any dataset with positions

    def heldout_batches(self) -> list[dict[str, Any]]:
        e = self.config.eval
        dataset = PairDataset(data_config(self.config), "heldout", batch_size=e.batch_size,
                              audio_encoder=self.audio_encoder())
        out, seen = [], 0
        for batch in pair_loader(dataset):
            out.append(batch)
            seen += len(batch["key"])
            if seen >= e.samples:
                break
        return out

    # -- the loss --

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], step: int):
        editor = unwrap(model)
        device = batch["target"].device
        vae = self.cached_vae(device)
        latents = prepare_pair_latents(batch, vae, editor.config.temporal_compression)
        c = self.config.loss
        flow = flow_step(_Unwrapped(model), latents, shift=c.phase_shift(self.phase), logit_mean=c.logit_mean,
                         logit_std=c.logit_std, audio_drop_prob=c.phase_audio_drop(self.phase),
                         reference_drop_prob=c.reference_drop_prob, motion_drop_prob=c.motion_drop_prob)
        fm = weighted_flow_loss(flow, latents, c.lambda_face, c.lambda_lip)
        metrics = {"flow": float(fm.detach())}
        total = fm
        if self.phase == 2 and c.lambda_sync > 0:
            total = total + c.lambda_sync * self._sync_term(flow, latents, batch, editor, metrics)
        if self.phase == 3 and c.lambda_identity > 0:
            total = total + c.lambda_identity * self._identity_term(flow, latents, batch, editor, metrics)
        return total, metrics

    def _generated_video(self, flow, latents, editor) -> tuple[torch.Tensor, int]:
        """The single-step estimate decoded with gradients, and the first video frame generated in
        every sample (frames before it are clean motion frames)."""
        video = decode_with_grad(self.vae(latents.target.device), flow.x0_hat(latents.target, self.config.loss.tau_max))
        motion = int((~flow.noised[:, 0, :, 0, 0]).sum(1).max())
        r = editor.config.temporal_compression
        return video, (1 + r * (motion - 1) if motion else 0)

    def _sync_term(self, flow, latents, batch, editor, metrics) -> torch.Tensor:
        from factory.models.sync_loss import sync_loss, window_starts

        syncnet = self.syncnet(latents.target.device)
        video, first = self._generated_video(flow, latents, editor)
        window = syncnet.window
        starts = window_starts(len(video), video.shape[2], first, window, None)
        per_sample = sync_loss(syncnet, video, batch["audio"], starts)
        spoken = flow.audio_keep.to(per_sample.dtype)  # a sample trained without audio cannot be in sync with it
        term = (per_sample * spoken).sum() / spoken.sum().clamp_min(1)
        metrics["sync"] = float(term.detach())
        return term

    def _identity_term(self, flow, latents, batch, editor, metrics) -> torch.Tensor:
        net = self.identity_net(latents.target.device)
        video, first = self._generated_video(flow, latents, editor)
        b, _, t = video.shape[:3]
        picks = torch.linspace(first, t - 1, min(self.config.loss.identity_frames, t - first)).round().long()
        frames = video[:, :, picks].permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B*F, 3, S, S)
        refs = batch["references"].to(video.device)
        ref_frames = refs.permute(0, 2, 1, 3, 4).flatten(0, 1)
        with torch.no_grad():
            anchor = torch.nn.functional.normalize(net(ref_frames).reshape(b, refs.shape[2], -1).mean(1), dim=1)
        emb = net(frames).reshape(b, len(picks), -1)
        per_sample = 1 - (emb * anchor[:, None]).sum(-1).mean(1)
        term = silent_mean(per_sample, flow.audio_keep)
        metrics["identity"] = float(term.detach())
        return term

    # -- held-out evaluation --

    def evaluate(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        batches = self.heldout_batches()
        if not batches:
            return {}
        e = self.config.eval
        syncnet, sync_note = try_build(lambda: self.syncnet(device)) if "sync" in e.metrics else (None, "")
        identity, csim_note = try_build(lambda: TorchEmbedder(self.identity_net(device))) \
            if "csim" in e.metrics else (None, "")
        scorer = DubberScorer(e.metrics, syncnet=syncnet, sync_note=sync_note, embedder=identity, csim_note=csim_note,
                              csim_frames=e.csim_frames, sync_max_offset=e.sync_max_offset)
        return evaluate_editor(unwrap(model), self.cached_vae(device), batches, e, self.loop.seed,
                               device, self.config.lora.ranges, scorer)

    # -- export --

    def settings(self) -> dict[str, Any]:
        e, d = self.config.eval, self.config.data
        return {"steps": e.steps, "shift": e.shift, "audio_guidance": e.audio_guidance,
                "reference_guidance": e.reference_guidance, "expert_ranges": dict(self.config.lora.ranges),
                "resolution": d.resolution, "segment_frames": d.segment_frames, "motion_frames": d.motion_frames,
                "recipe_config": to_dict(self.config)}

    def save_pretrained(self, model: torch.nn.Module, path: Path) -> None:
        editor = unwrap(model)
        device = next(editor.parameters()).device
        save_editor_folder(path, editor, vae=self.vae(device), audio=self.audio_encoder(), lora_cfg=self.config.lora,
                           phase=self.phase, settings=self.settings())


# 3. held-out metrics ------------------------------------------------------------------------

@torch.no_grad()
def evaluate_editor(editor: XDubEditor, vae: CachedVAE, batches: list[dict[str, Any]], cfg: XDubEvalConfig, seed: int,
                    device: torch.device, expert_ranges: dict[str, list[float]] | None = None,
                    scorer: DubberScorer | None = None) -> dict[str, float]:
    """Per held-out pair, one sampled segment (experts routed by flow time), scored where the lips
    are (real or synthetic lip masks), generated frames only:

    - latent_l1_editor vs latent_l1_synthetic: the sample's latents vs the real ones, beside the
      synthetic input's (the "return the input unchanged" baseline a useful editor must beat);
    - mouth_l1_* / mouth_psnr_*: the same in pixels ([0, 1] units), plus the VAE's reconstruction
      of the real frames (vae: the floor of any latent model);
    - with cfg.audio_swap, latent_change_audio / latent_change_noise: how far the lips move when
      another held-out pair's audio drives the edit, and when only the noise changes (an editor
      that follows the audio moves more with the audio), and latent_l1_editor_swapped: that
      other-audio edit against the real latents;
    - with a `scorer`, the measurement metrics of the editor's and the synthetic input's generated
      frames against the real frames and audio (sync_c_editor, csim_editor, lmd_editor, psnr_editor,
      ...: factory/trainers/dubber_metrics.py)."""
    r = editor.config.temporal_compression
    m = editor.config.motion_latent_frames if cfg.motion else 0
    skip = 1 + r * (m - 1) if m else 0
    sums: dict[str, list[float]] = {}

    def add(name: str, value: float, weight: float) -> None:
        s = sums.setdefault(name, [0.0, 0.0])
        s[0] += value * weight
        s[1] += weight

    feats = [b["audio_features"] for b in batches]
    swapped = feats[1:] + feats[:1] if len(batches) > 1 else [f.roll(1, dims=0) for f in feats]
    can_swap = cfg.audio_swap and sum(len(f) for f in feats) > 1
    index = 0
    for batch, other in zip(batches, swapped):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        b = len(batch["target"])
        z = prepare_pair_latents(batch, vae, r)

        def edit(audio_features: torch.Tensor, noise_seed: int) -> torch.Tensor:
            gens = [torch.Generator("cpu").manual_seed(noise_seed * 100_003 + index + i) for i in range(b)]
            return sample_editor(editor, z.reference, audio_features, motion=z.target[:, :, :m] if m else None,
                                 steps=cfg.steps, shift=cfg.shift, audio_guidance=cfg.audio_guidance,
                                 reference_guidance=cfg.reference_guidance, expert_ranges=expert_ranges, generator=gens)

        ours = edit(z.audio_features, seed)
        cells = z.lip_weight[:, :, m:]
        weight_cells = float(cells.sum())
        for name, x in (("editor", ours), ("synthetic", z.reference)):
            add(f"latent_l1_{name}", _region_l1_mse(x[:, :, m:], z.target[:, :, m:], cells, 1.0)[0], weight_cells)
        if can_swap:
            other = (other if len(other) >= b else torch.cat([other, feats[0]]))[:b].to(device)
            for name, changed in (("audio", edit(other, seed)), ("noise", edit(z.audio_features, seed + 1))):
                add(f"latent_change_{name}", _region_l1_mse(changed[:, :, m:], ours[:, :, m:], cells, 1.0)[0],
                    weight_cells)
                if name == "audio":
                    add("latent_l1_editor_swapped",
                        _region_l1_mse(changed[:, :, m:], z.target[:, :, m:], cells, 1.0)[0], weight_cells)
        lips = batch["lip_mask"]
        if "syn_lip_mask" in batch:
            lips = torch.maximum(lips, batch["syn_lip_mask"])
        lips, real = lips[:, :, skip:], batch["target"][:, :, skip:]
        pixels = {"editor": vae.decode(ours), "synthetic": batch["synthetic"], "vae": vae.decode(z.target)}
        weight = float(lips.sum())
        for name, x in pixels.items():
            l1, mse = _region_l1_mse(x[:, :, skip:].to(real.dtype), real, lips)
            add(f"mouth_l1_{name}", l1, weight)
            add(f"mouth_mse_{name}", mse, weight)
        if scorer is not None:
            scorer.add({name: pixels[name][:, :, skip:] for name in ("editor", "synthetic")}, real,
                       batch["audio"][:, skip * SAMPLES_PER_FRAME:])
        index += b
    metrics = {k: s / max(w, 1e-9) for k, (s, w) in sums.items()}
    for name in ("editor", "synthetic", "vae"):
        metrics[f"mouth_psnr_{name}"] = psnr(metrics.pop(f"mouth_mse_{name}"))
    if scorer is not None:
        metrics.update(scorer.result())
    return metrics
