"""Latent flow matching for the DiT inpainter (X-Dub Stage I): the training loss, the sampler, and
long-clip generation in motion-bridged segments.

Conventions (diffusers' and X-Dub's): flow time t = sigma in [0, 1], x_t = (1 - t) x0 + t eps, the
model predicts v = eps - x0. Training draws t logit-normally
(`diffusers.training_utils.compute_density_for_timestep_sampling`) and shifts it,
t' = a t / (1 + (a - 1) t) (X-Dub Eq. 2; a = 5 leans on the noisy end, where lip shape is
decided). The loss weighs the face and lip regions up,
(1 + lambda_face M_face + lambda_lip M_lip) * (v_hat - v)^2, averaged over the noised target
latents only (reference and motion frames are clean context, never scored). Dropping the audio
for a share of the samples trains the unconditional branch that audio CFG needs.

Sampling: Euler steps of `FlowMatchEulerDiscreteScheduler(shift=a)` from pure noise, the motion
latent frames put back clean before every step, optional audio CFG (uncond = no audio), all noise
from one torch.Generator (same seed, same output). Long clips go in segments of 25 frames; each
next segment starts with the last 5 frames already generated (encoded again: 2 clean latent
frames), bridging in pixel space, which the causal VAE makes exact: 5 frames encoded alone are the
first 2 latents of any clip that starts with them.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling
from diffusers.utils.torch_utils import randn_tensor

from factory.models.dit_inpainter import (DiTInpainter, InpaintLatents, encode_references, mask_to_latent_channels,
                                          noised_frame_mask)


class VideoCodec(Protocol):
    """A video VAE as `generate_long` uses it: (B, 3, F, H, W) in [-1, 1] <-> (B, C, L, h, w)."""
    def encode(self, video: torch.Tensor) -> torch.Tensor: ...
    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


# 1. flow time ---------------------------------------------------------------------------------

def shift_flow_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """a t / (1 + (a - 1) t): the same shift FlowMatchEulerDiscreteScheduler(shift=a) applies."""
    return shift * t / (1 + (shift - 1) * t)


def _uniform(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """Uniform draws from `generator` on its own device (a CPU generator serves a CUDA model)."""
    where = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=where).to(device)


def sample_flow_time(batch: int, *, shift: float, logit_mean: float = 0.0, logit_std: float = 1.0,
                     generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """(batch,) training flow times: logit-normal, then shifted."""
    where = generator.device if generator is not None else device
    u = compute_density_for_timestep_sampling("logit_normal", batch, logit_mean=logit_mean, logit_std=logit_std,
                                              device=where, generator=generator)
    return shift_flow_time(u.to(device), shift)


# 2. training loss -----------------------------------------------------------------------------

def flow_matching_loss(model: DiTInpainter, latents: InpaintLatents, *, lambda_face: float = 1.0,
                       lambda_lip: float = 1.0, shift: float = 5.0, logit_mean: float = 0.0,
                       logit_std: float = 1.0, audio_drop_prob: float = 0.0, motion_drop_prob: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The mask-weighted flow-matching loss of one batch (a scalar).

    audio_drop_prob: share of samples trained without audio (for CFG at sampling time);
    motion_drop_prob: share trained with no clean motion frames (a clip's first segment has none).
    All randomness (t, noise, drops) comes from `generator` when given."""
    x0 = latents.target
    b, _, frames = x0.shape[:3]
    device = x0.device
    t = sample_flow_time(b, shift=shift, logit_mean=logit_mean, logit_std=logit_std, generator=generator,
                         device=device)
    eps = randn_tensor(tuple(x0.shape), generator=generator, device=device, dtype=x0.dtype)
    motion = torch.full((b,), model.config.motion_latent_frames, device=device)
    if motion_drop_prob > 0:
        motion = torch.where(_uniform(b, generator, device) < motion_drop_prob, 0, motion)
    audio_keep = None
    if audio_drop_prob > 0:
        audio_keep = (_uniform(b, generator, device) >= audio_drop_prob).float()

    noised = noised_frame_mask(motion, b, frames, device)[:, None, :, None, None]  # (B, 1, L, 1, 1)
    tt = t.reshape(b, 1, 1, 1, 1)
    x_t = torch.where(noised, (1 - tt) * x0 + tt * eps, x0)
    v = eps - x0

    dtype = model.dtype
    v_hat = model(x_t.to(dtype), t.to(dtype), latents.background.to(dtype), latents.mask.to(dtype),
                  latents.references.to(dtype), latents.audio_features, motion_frames=motion,
                  audio_keep=audio_keep)
    weight = 1 + lambda_face * latents.face_weight + lambda_lip * latents.lip_weight  # (B, 1, L, h, w)
    err = weight * (v_hat.float() - v.float()) ** 2
    scored = noised.expand_as(err)
    return err[scored].mean()


# 3. sampler -----------------------------------------------------------------------------------

@torch.no_grad()
def sample(model: DiTInpainter, background: torch.Tensor, mask: torch.Tensor, references: torch.Tensor,
           audio_features: torch.Tensor | None = None, *, motion: torch.Tensor | None = None, steps: int = 25,
           guidance_scale: float = 1.0, shift: float = 5.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Target latents (B, C, L, h, w) for one segment.

    background (B, C, L, h, w), mask (B, r, L, h, w), references (B, C, N, h, w); motion: clean
    latents of the first frames (B, C, m, h, w) or None (every frame generated); guidance_scale > 1
    adds audio CFG (one extra model call per step)."""
    dtype, device = model.dtype, background.device
    b, _, frames = background.shape[:3]
    m = 0 if motion is None else motion.shape[2]
    x = randn_tensor(tuple(background.shape), generator=generator, device=device, dtype=torch.float32)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps), device=device)
    cond = dict(background=background.to(dtype), mask=mask.to(dtype), references=references.to(dtype))
    use_cfg = guidance_scale != 1.0 and audio_features is not None
    for timestep in scheduler.timesteps:
        if m:
            x[:, :, :m] = motion.float()
        t = (timestep / scheduler.config.num_train_timesteps).expand(b).to(dtype)
        v = model(x.to(dtype), t, **cond, audio_features=audio_features, motion_frames=m).float()
        if use_cfg:
            v_uncond = model(x.to(dtype), t, **cond, audio_features=None, motion_frames=m).float()
            v = v_uncond + guidance_scale * (v - v_uncond)
        x = scheduler.step(v, timestep, x).prev_sample
    if m:
        x[:, :, :m] = motion.float()
    return x


# 4. long clips --------------------------------------------------------------------------------

def _pad_to(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Repeat the last entry along `dim` up to `length` (a short tail segment)."""
    missing = length - x.shape[dim]
    if missing <= 0:
        return x
    last = x.narrow(dim, x.shape[dim] - 1, 1)
    return torch.cat([x, last.expand(*[missing if d == dim else -1 for d in range(x.dim())])], dim=dim)


@torch.no_grad()
def generate_long(model: DiTInpainter, vae: VideoCodec, frames: torch.Tensor, face_mask: torch.Tensor,
                  audio_features: torch.Tensor, references: torch.Tensor, *, segment_frames: int = 25,
                  steps: int = 25, guidance_scale: float = 1.0, shift: float = 5.0,
                  generator: torch.Generator | None = None, first_motion: str = "generate") -> torch.Tensor:
    """Re-render the masked face of a clip of any length for its audio, in bridged segments.

    frames (B, 3, T, H, W) in [-1, 1] (the source: its background is kept as conditioning),
    face_mask (B, 1, T, H, W) {0,1} region to render, audio_features (B, T, W, D), references
    (B, 3, N, H, W). Segments hold `segment_frames` (1 + 4k) frames; every segment after the first
    starts with the last 5 frames generated so far (the model's motion latent frames). The first
    segment has no past: first_motion="generate" renders all of it, "source" keeps the source's
    first 5 frames as its motion frames. Returns (B, 3, T, H, W) in [-1, 1]."""
    r = model.config.temporal_compression
    overlap = 1 + r * (model.config.motion_latent_frames - 1)  # 5 video frames = 2 latent frames
    if (segment_frames - 1) % r or segment_frames <= overlap:
        raise ValueError(f"segment_frames={segment_frames}: must be 1 + {r}k and longer than the "
                         f"{overlap} motion frames")
    if first_motion not in ("generate", "source"):
        raise ValueError(f"first_motion must be 'generate' or 'source', not {first_motion!r}")
    total = frames.shape[2]
    ref_latents = encode_references(references, vae.encode)
    out = frames.new_zeros(frames.shape)
    done, start = 0, 0
    while done < total:
        available = min(segment_frames, total - start)
        length = 1 + r * -(-(available - 1) // r)  # the tail rounded up to 1 + rk, padded by repetition
        seg = _pad_to(frames[:, :, start:start + available], length, 2)
        seg_mask = _pad_to(face_mask[:, :, start:start + available], length, 2)
        seg_audio = _pad_to(audio_features[:, start:start + available], length, 1)
        if done:
            motion = vae.encode(out[:, :, start:start + overlap])
        elif first_motion == "source" and available >= overlap:
            motion = vae.encode(frames[:, :, :overlap])
        else:
            motion = None
        background = vae.encode(seg * (1 - seg_mask))
        mask = mask_to_latent_channels(seg_mask, tuple(background.shape[-2:]), r)
        z = sample(model, background, mask, ref_latents, seg_audio, motion=motion, steps=steps,
                   guidance_scale=guidance_scale, shift=shift, generator=generator)
        video = vae.decode(z.to(background.dtype))[:, :, :available].clamp(-1, 1)
        keep = overlap if done else 0  # the bridged frames are already in `out`
        out[:, :, start + keep:start + available] = video[:, :, keep:].to(out.dtype)
        done = start + available
        start = done - overlap
    return out
