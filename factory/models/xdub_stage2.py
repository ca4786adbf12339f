"""X-Dub Stage II: the mask-free editor. A latent flow-matching DiT that re-renders a real video's
lips for its real audio, given the synthetic companion video (same frames, other lips) as context.

The editor is the Stage I DiT (factory/models/dit_inpainter.py) used differently, so Stage I's
weights load unchanged (X-Dub initialises Stage II from Stage I):

    [ L reference latent frames (the synthetic video) | L target latent frames (noised real video) ]

- reference tokens: the synthetic video's latents, one latent frame per target latent frame, at
  per-token timestep 0 (clean context), with temporally aligned, spatially shifted RoPE positions
  (factory/models/rope_shift.py): reference frame k shares target frame k's time;
- target tokens: the noised real latents; the first `motion_latent_frames` clean (the 5 frames that
  continue the previous segment, as in Stage I); no mask and no masked background: Stage I's extra
  input channels get zeros (mask-free);
- audio: Stage I's frame-wise audio cross-attention, on the target tokens only;
- the model predicts v = eps - x0 of the target latents.

Training (the recipe, factory/trainers/xdub_recipe.py) uses `flow_step` for the flow-matching loss
of every phase and the single-step clean estimate (factory/models/timestep_sampling.py) for the lip
phase's SyncNet loss and the texture phase's identity loss; `decode_with_grad` lets those losses
reach the DiT through the frozen VAE. `sample_editor` denoises one segment with the LoRA experts
routed by flow time (factory/models/lora_experts.py) and optional audio / reference CFG.

Read top to bottom: 1. latents, 2. the model, 3. the training step, 4. sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.configuration_utils import register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.utils.torch_utils import randn_tensor

from factory.models.dit_inpainter import DiTInpainter, mask_to_latent_weight, noised_frame_mask
from factory.models.flow_matching import _uniform, sample_flow_time
from factory.models.lora_experts import EXPERT_RANGES, activate_expert, expert_for_time, expert_names, expert_state
from factory.models.rope_shift import ShiftedRope
from factory.models.timestep_sampling import one_step_x0


# 1. latents: a pair batch -> model inputs --------------------------------------------------------

@dataclass
class PairLatents:
    """One pair batch in latent space (X-Dub: input V_syn + A_real, target V_real)."""
    target: torch.Tensor  # (B, C, L, h, w) the real video's latents x0
    reference: torch.Tensor  # (B, C, L, h, w) the synthetic video's latents
    audio_features: torch.Tensor | None  # (B, T, W, D) windows of the real audio
    face_weight: torch.Tensor  # (B, 1, L, h, w) {0,1} lower face at latent resolution
    lip_weight: torch.Tensor  # (B, 1, L, h, w) {0,1} real or synthetic lips (where the pair differs)

    def to(self, device) -> "PairLatents":
        return PairLatents(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                              for f in fields(self)})


@torch.no_grad()
def prepare_pair_latents(batch: dict, encode: Callable[[torch.Tensor], torch.Tensor], r: int = 4) -> PairLatents:
    """The pair batch contract -> PairLatents; `encode` maps (B, 3, F, H, W) in [-1, 1] to latents."""
    x0 = encode(batch["target"])
    size = tuple(x0.shape[-2:])
    lips = batch["lip_mask"]
    if "syn_lip_mask" in batch:
        lips = torch.maximum(lips, batch["syn_lip_mask"])
    return PairLatents(target=x0, reference=encode(batch["synthetic"]), audio_features=batch.get("audio_features"),
                       face_weight=mask_to_latent_weight(batch["face_mask"], size, r),
                       lip_weight=mask_to_latent_weight(lips, size, r))


def decode_with_grad(vae, latents: torch.Tensor) -> torch.Tensor:
    """factory.models.vae.VAE.decode for a Wan VAE, without its no_grad: gradients reach the
    latents (the VAE's own weights stay frozen). (B, C, L, h, w) normalised -> (B, 3, F, H, W)."""
    if vae.config.kind != "wan":
        raise ValueError("the editor works in a Wan VAE's latents")
    c = vae.model.config
    mean = torch.tensor(c.latents_mean, device=latents.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(c.latents_std, device=latents.device).view(1, -1, 1, 1, 1)
    z = latents.float() * std + mean
    return vae.model.decode(z.to(vae.dtype)).sample.float().clamp(-1, 1)


# 2. the model --------------------------------------------------------------------------------

class XDubEditor(DiTInpainter, PeftAdapterMixin):
    """DiTInpainter's network with the synthetic video as L reference frames, shifted RoPE for them,
    and no mask inputs. `num_reference_frames` must equal the target's latent frames."""

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 48,
        temporal_compression: int = 4,
        num_reference_frames: int = 7,  # = the target's latent frames (25 video frames: 7)
        motion_latent_frames: int = 2,
        audio_dim: int = 1280,
        audio_window: int = 16,
        audio_heads: int | None = None,
        text_tokens: int = 1,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 24,
        attention_head_dim: int = 128,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 14336,
        num_layers: int = 30,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        rope_max_seq_len: int = 1024,
        rope_shift: list[int] | None = None,  # (h', w') in tokens; null: (0, token width), side by side
        transformer=None,
    ):
        # diffusers reads a model's config keys from its __init__ signature: Stage I's, spelled out
        super().__init__(latent_channels=latent_channels, temporal_compression=temporal_compression,
                         num_reference_frames=num_reference_frames, motion_latent_frames=motion_latent_frames,
                         audio_dim=audio_dim, audio_window=audio_window, audio_heads=audio_heads,
                         text_tokens=text_tokens, patch_size=patch_size, num_attention_heads=num_attention_heads,
                         attention_head_dim=attention_head_dim, text_dim=text_dim, freq_dim=freq_dim,
                         ffn_dim=ffn_dim, num_layers=num_layers, cross_attn_norm=cross_attn_norm, qk_norm=qk_norm,
                         eps=eps, rope_max_seq_len=rope_max_seq_len, transformer=transformer)
        self.transformer.rope = ShiftedRope(self.transformer.rope, self.config.num_reference_frames,
                                            None if rope_shift is None else tuple(rope_shift))

    def forward(self, noisy_target: torch.Tensor, t: torch.Tensor, reference: torch.Tensor,
                audio_features: torch.Tensor | None = None, *, motion_frames: int | torch.Tensor | None = None,
                audio_keep: torch.Tensor | None = None, reference_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity (B, C, L, h, w) of the target latents. reference (B, C, L, h, w) the synthetic
        video's latents; reference_keep (B,) 0/1 zeroes a sample's reference (the branch that
        reference CFG needs); the rest as DiTInpainter.forward."""
        b, c, frames, h, w = noisy_target.shape
        if reference.shape[2] != frames:
            raise ValueError(f"{reference.shape[2]} reference latent frames for {frames} target frames: "
                             "the synthetic video must cover the same frames")
        if reference_keep is not None:
            reference = reference * reference_keep.to(reference.dtype).reshape(b, 1, 1, 1, 1)
        r = self.config.temporal_compression
        empty = noisy_target.new_zeros(b, c, frames, h, w), noisy_target.new_zeros(b, r, frames, h, w)
        return super().forward(noisy_target, t, *empty, reference, audio_features, motion_frames=motion_frames,
                               audio_keep=audio_keep)

    @classmethod
    def from_stage1(cls, folder: str | Path, latent_frames: int, rope_shift: list[int] | None = None,
                    key: str = "init_from") -> "XDubEditor":
        """Stage II initialised from a Stage I DiT folder (a `dit_inpainter` generator's `dit/`):
        the same weights, `latent_frames` reference frames, shifted RoPE."""
        from factory.config import ConfigError

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ConfigError(f"config key {key!r} = {str(folder)!r}: no DiT config.json there")
        stage1 = DiTInpainter.from_pretrained(folder, local_files_only=True)
        settings = {k: v for k, v in stage1.config.items() if not k.startswith("_")}
        model = cls(**{**settings, "num_reference_frames": latent_frames, "rope_shift": rope_shift})
        model.load_state_dict(stage1.state_dict())
        return model


# 3. the training step ------------------------------------------------------------------------

@dataclass
class FlowStep:
    """One model call on noised target latents, with what the losses need."""
    t: torch.Tensor  # (B,) flow time
    x_t: torch.Tensor  # (B, C, L, h, w) model input (motion frames clean)
    v: torch.Tensor  # target velocity eps - x0
    v_hat: torch.Tensor  # the model's velocity
    noised: torch.Tensor  # (B, 1, L, 1, 1) bool: frames the model generated (not motion frames)
    audio_keep: torch.Tensor  # (B,) 1: audio given, 0: the silent branch

    def x0_hat(self, x0: torch.Tensor, tau_max: float) -> torch.Tensor:
        """Single-step clean estimate z_t - min(t, tau_max) v_hat; motion frames are the real x0."""
        return torch.where(self.noised, one_step_x0(self.x_t, self.v_hat.to(self.x_t.dtype), self.t, tau_max), x0)


def flow_step(model, latents: PairLatents, *, shift: float, logit_mean: float = 0.0, logit_std: float = 1.0,
              audio_drop_prob: float = 0.0, reference_drop_prob: float = 0.0, motion_drop_prob: float = 0.0,
              generator: torch.Generator | None = None) -> FlowStep:
    """Draw t (shifted logit-normal), noise and drops; run the model once. All randomness from
    `generator` when given. `model` may be a DDP wrapper exposing `config` and `dtype`."""
    x0 = latents.target
    b, _, frames = x0.shape[:3]
    device = x0.device
    t = sample_flow_time(b, shift=shift, logit_mean=logit_mean, logit_std=logit_std, generator=generator,
                         device=device)
    eps = randn_tensor(tuple(x0.shape), generator=generator, device=device, dtype=x0.dtype)
    motion = torch.full((b,), model.config.motion_latent_frames, device=device)
    if motion_drop_prob > 0:
        motion = torch.where(_uniform(b, generator, device) < motion_drop_prob, 0, motion)
    audio_keep = (_uniform(b, generator, device) >= audio_drop_prob).float()
    ref_keep = (_uniform(b, generator, device) >= reference_drop_prob).float() if reference_drop_prob > 0 else None
    noised = noised_frame_mask(motion, b, frames, device)[:, None, :, None, None]
    tt = t.reshape(b, 1, 1, 1, 1)
    x_t = torch.where(noised, (1 - tt) * x0 + tt * eps, x0)
    dtype = model.dtype
    v_hat = model(x_t.to(dtype), t.to(dtype), latents.reference.to(dtype), latents.audio_features,
                  motion_frames=motion, audio_keep=audio_keep if audio_drop_prob > 0 else None,
                  reference_keep=ref_keep)
    return FlowStep(t=t, x_t=x_t, v=eps - x0, v_hat=v_hat, noised=noised, audio_keep=audio_keep)


def weighted_flow_loss(step: FlowStep, latents: PairLatents, lambda_face: float = 1.0,
                       lambda_lip: float = 1.0) -> torch.Tensor:
    """(1 + lambda_face M_face + lambda_lip M_lip) (v_hat - v)^2, averaged over the generated
    frames only (motion frames are clean context, never scored)."""
    weight = 1 + lambda_face * latents.face_weight + lambda_lip * latents.lip_weight
    err = weight * (step.v_hat.float() - step.v.float()) ** 2
    return err[step.noised.expand_as(err)].mean()


def silent_mean(per_sample: torch.Tensor, audio_keep: torch.Tensor) -> torch.Tensor:
    """Mean of a per-sample loss over the silent branch only (audio dropped): X-Dub's texture losses.
    Zero (still in the graph) when no sample of the batch is silent."""
    silent = (audio_keep < 0.5).to(per_sample.dtype)
    return (per_sample * silent).sum() / silent.sum().clamp_min(1)


# 4. sampling ---------------------------------------------------------------------------------

@torch.no_grad()
def sample_editor(model: XDubEditor, reference: torch.Tensor, audio_features: torch.Tensor | None, *,
                  motion: torch.Tensor | None = None, steps: int = 25, shift: float = 5.0,
                  audio_guidance: float = 1.0, reference_guidance: float = 1.0,
                  expert_ranges: dict[str, list[float]] | None = None,
                  generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
    """Target latents (B, C, L, h, w) for one segment. reference: the synthetic (input) video's
    latents; motion: clean latents of the first frames (B, C, m, h, w) or None. Each Euler step
    runs with the expert whose range holds its t (lip [0.4, 0.8], texture [0, 0.3]: the ones the
    model has), else the base alone. CFG: v = v_c + (s_a - 1)(v_c - v_no_audio)
    + (s_r - 1)(v_c - v_no_reference); each scale != 1 costs one more call per step."""
    dtype, device = model.dtype, reference.device
    b, _, frames = reference.shape[:3]
    m = 0 if motion is None else motion.shape[2]
    x = randn_tensor(tuple(reference.shape), generator=generator, device=device, dtype=torch.float32)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), device=device)
    ranges = expert_ranges or {k: list(v) for k, v in EXPERT_RANGES.items()}
    available, before = expert_names(model), expert_state(model)
    ref = reference.to(dtype)
    zero = torch.zeros(b, device=device)
    try:
        for timestep in scheduler.timesteps:
            if m:
                x[:, :, :m] = motion.float()
            t = timestep / scheduler.config.num_train_timesteps
            activate_expert(model, expert_for_time(float(t), ranges, available))
            tt = t.expand(b).to(dtype)
            v = model(x.to(dtype), tt, ref, audio_features, motion_frames=m).float()
            guided = v
            if audio_guidance != 1.0 and audio_features is not None:
                guided = guided + (audio_guidance - 1) * (v - model(x.to(dtype), tt, ref, None, motion_frames=m).float())
            if reference_guidance != 1.0:
                v_noref = model(x.to(dtype), tt, ref, audio_features, motion_frames=m, reference_keep=zero).float()
                guided = guided + (reference_guidance - 1) * (v - v_noref)
            x = scheduler.step(guided, timestep, x).prev_sample
    finally:
        activate_expert(model, before if before in available else None)
    if m:
        x[:, :, :m] = motion.float()
    return x


# 5. long clips -------------------------------------------------------------------------------

@torch.no_grad()
def edit_long(model: XDubEditor, vae, video: torch.Tensor, audio_features: torch.Tensor, *, segment_frames: int = 25,
              steps: int = 25, shift: float = 5.0, audio_guidance: float = 1.0, reference_guidance: float = 1.0,
              expert_ranges: dict[str, list[float]] | None = None,
              generator: torch.Generator | list[torch.Generator] | None = None,
              first_motion: str = "generate") -> torch.Tensor:
    """Dub a clip of any length: the input video (B, 3, T, H, W) in [-1, 1] (the editor's reference,
    whose lips are to change) re-rendered for audio_features (B, T, W, D), in segments of
    `segment_frames` (1 + 4k) frames. Every segment after the first starts with the last 5 frames
    already rendered as its clean motion frames (re-encoded: the causal VAE makes the bridge exact,
    see flow_matching.generate_long); the first renders every frame, or, with first_motion="source"
    (the clip starts with frames already dubbed before it), keeps its first 5 as motion frames.
    Returns (B, 3, T, H, W)."""
    from factory.models.flow_matching import _pad_to

    r = model.config.temporal_compression
    overlap = 1 + r * (model.config.motion_latent_frames - 1)
    if (segment_frames - 1) % r or segment_frames <= overlap:
        raise ValueError(f"segment_frames={segment_frames}: must be 1 + {r}k and longer than the {overlap} motion frames")
    if first_motion not in ("generate", "source"):
        raise ValueError(f"first_motion must be 'generate' or 'source', not {first_motion!r}")
    if segment_frames != 1 + r * (model.config.num_reference_frames - 1):
        raise ValueError(f"segment_frames={segment_frames}: the editor was built for "
                         f"{1 + r * (model.config.num_reference_frames - 1)}-frame segments")
    total = video.shape[2]
    out = video.new_zeros(video.shape)
    done, start = 0, 0
    while done < total:
        available = min(segment_frames, total - start)
        seg = _pad_to(video[:, :, start:start + available], segment_frames, 2)
        seg_audio = _pad_to(audio_features[:, start:start + available], segment_frames, 1)
        if done:
            motion = vae.encode(out[:, :, start:start + overlap])
        elif first_motion == "source" and available >= overlap:
            motion = vae.encode(video[:, :, :overlap])
        else:
            motion = None
        z = sample_editor(model, vae.encode(seg), seg_audio, motion=motion, steps=steps, shift=shift,
                          audio_guidance=audio_guidance, reference_guidance=reference_guidance,
                          expert_ranges=expert_ranges, generator=generator)
        rendered = vae.decode(z)[:, :, :available].clamp(-1, 1)
        keep = overlap if done else 0
        out[:, :, start + keep:start + available] = rendered[:, :, keep:].to(out.dtype)
        done = start + available
        start = done - overlap
    return out
