"""FlashLips Stage 2: audio -> lip poses by conditional flow matching in lip-pose space.

The editor (factory/models/latent_editor.py) is driven by a 12-D lip pose per frame
(factory/models/lip_pose.py). Stage 2 draws a segment's pose sequence from its audio: a small
transformer predicts the velocity of a straight path from noise to the poses,

    z_t = (1 - t) eps + t z_lips,     target  v = z_lips - eps,     t in [0, 1]

(t = 0 is noise, t = 1 the data: FlashLips' convention, the reverse of diffusers'), conditioned on
wav2vec 2.0 windows of the segment's audio (one window per frame, factory/models/wav2vec_features.py)
and on K reference lip poses of the same speaker (how wide this person opens their mouth). Poses
enter normalised (`pose_mean` / `pose_std` buffers, set from training data by the recipe), so the
noise and the data have the same scale.

Tokens: one per video frame (noised pose + projected audio window + frame position) and one per
reference pose (+ a learned "reference" embedding); the flow time enters as a sinusoidal embedding
added to every token. The output head starts at zero, so an untrained model predicts the skip alone.

Read top to bottom: 1. the path and its target, 2. the sampler, 3. the model, 4. the training loss.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


# 1. the path ------------------------------------------------------------------------------------

def noised_poses(z_lips: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t = (1 - t) eps + t z_lips; z_lips, noise (B, T, P), t (B,)."""
    t = t.to(z_lips.dtype)[:, None, None]
    return (1 - t) * noise + t * z_lips


def velocity_target(z_lips: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d z_t / dt = z_lips - eps."""
    return z_lips - noise


# 2. the sampler ---------------------------------------------------------------------------------

def euler_sample(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                 steps: int) -> torch.Tensor:
    """Integrate dz/dt = velocity(z, t) from t = 0 (z = noise) to t = 1 in `steps` equal Euler steps;
    `velocity` takes z (B, ...) and t (B,). A field constant along each straight path (the ideal one
    for this path) is integrated exactly with any number of steps."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, not {steps}")
    z = noise
    b = noise.shape[0]
    for i in range(steps):
        t = torch.full((b,), i / steps, device=noise.device, dtype=noise.dtype)
        z = z + velocity(z, t) / steps
    return z


# 3. the model -----------------------------------------------------------------------------------

def gaussian_velocity(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[z - eps | z_t] when the (normalised) poses were N(0, I) themselves: (2t - 1) / ((1 - t)^2 + t^2) z_t.
    The model adds its prediction to this, so an untrained model already carries noise to poses of the
    right mean and spread (its t = 0 estimate is the mean pose), and training learns what the audio
    and the references add to that."""
    t = t.to(z_t.dtype)[:, None, None]
    return (2 * t - 1) / ((1 - t) ** 2 + t ** 2) * z_t


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) flow times in [0, 1] -> (B, dim) sinusoids (t scaled by 1000, as diffusion models do)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * 1000 * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return torch.nn.functional.pad(emb, (0, dim % 2))


class LipPoseFlow(ModelMixin, ConfigMixin):
    """(z_t (B, T, P), t (B,), audio windows (B, T, W, D), reference poses (B, K, P)) -> v (B, T, P),
    all poses normalised (`normalise` / `denormalise`)."""

    @register_to_config
    def __init__(
        self,
        pose_dim: int = 12,  # LipPoseEncoder.pose_dim
        audio_dim: int = 768,  # wav2vec 2.0 base's hidden size
        audio_window: int = 8,  # encoder frames per video frame
        hidden_dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        ffn_mult: int = 4,
        max_frames: int = 128,  # longest segment (frame position embeddings)
        dropout: float = 0.0,
        gaussian_skip: bool = True,  # predict the residual over the ideal field of N(0, I) poses
    ):
        super().__init__()
        h = hidden_dim
        self.pose_in = nn.Linear(pose_dim, h)
        self.audio_in = nn.Sequential(nn.LayerNorm(audio_window * audio_dim), nn.Linear(audio_window * audio_dim, h))
        self.reference_in = nn.Linear(pose_dim, h)
        self.reference_type = nn.Parameter(torch.zeros(h))
        self.frame_position = nn.Parameter(torch.zeros(max_frames, h))
        nn.init.normal_(self.frame_position, std=0.02)
        nn.init.normal_(self.reference_type, std=0.02)
        self.time_mlp = nn.Sequential(nn.Linear(h, h), nn.SiLU(), nn.Linear(h, h))
        layer = nn.TransformerEncoderLayer(h, num_heads, ffn_mult * h, dropout=dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(h)
        self.head = nn.Linear(h, pose_dim)
        nn.init.zeros_(self.head.weight)  # v = 0 at initialisation
        nn.init.zeros_(self.head.bias)
        # the normalisation of the poses (set by the recipe from training data; saved with the weights)
        self.register_buffer("pose_mean", torch.zeros(pose_dim))
        self.register_buffer("pose_std", torch.ones(pose_dim))

    def normalise(self, poses: torch.Tensor) -> torch.Tensor:
        return (poses - self.pose_mean) / self.pose_std

    def denormalise(self, poses: torch.Tensor) -> torch.Tensor:
        return poses * self.pose_std + self.pose_mean

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        b, frames = z_t.shape[:2]
        if frames > self.config.max_frames:
            raise ValueError(f"{frames} frames: more than max_frames ({self.config.max_frames})")
        if audio.shape[1:] != (frames, self.config.audio_window, self.config.audio_dim):
            raise ValueError(f"audio must be (B, {frames}, {self.config.audio_window}, {self.config.audio_dim}), "
                             f"got {tuple(audio.shape)}")
        dtype = self.pose_in.weight.dtype
        temb = self.time_mlp(timestep_embedding(t, self.config.hidden_dim).to(dtype))[:, None]
        tokens = self.pose_in(z_t.to(dtype)) + self.audio_in(audio.flatten(2).to(dtype)) + self.frame_position[:frames]
        refs = self.reference_in(references.to(dtype)) + self.reference_type
        x = self.blocks(torch.cat([tokens, refs], dim=1) + temb)
        v = self.head(self.norm_out(x[:, :frames]))
        if self.config.gaussian_skip:
            v = v + gaussian_velocity(z_t.to(v.dtype), t)
        return v

    @torch.no_grad()
    def sample(self, audio: torch.Tensor, references: torch.Tensor, steps: int = 10,
               generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Lip poses (B, T, P), denormalised, for audio windows (B, T, W, D) and raw reference
        poses (B, K, P): Euler from noise drawn with `generator` (or the given noise)."""
        b, frames = audio.shape[:2]
        if noise is None:
            where = generator.device if generator is not None else audio.device
            noise = torch.randn(b, frames, self.config.pose_dim, generator=generator, device=where)
        noise = noise.to(audio.device, torch.float32)
        refs = self.normalise(references.float())
        z = euler_sample(lambda z, t: self(z, t, audio, refs).float(), noise, steps)
        return self.denormalise(z)


# 4. the training loss ---------------------------------------------------------------------------

def lip_flow_loss(model: LipPoseFlow, poses: torch.Tensor, audio: torch.Tensor, references: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean squared error of the predicted velocity at a uniform t per segment; poses (B, T, P) and
    references (B, K, P) raw (normalised here), audio windows (B, T, W, D). Noise and t come from
    `generator` (or the global RNG, which the training loop restores on resume)."""
    z = model.normalise(poses.float())
    where = generator.device if generator is not None else z.device
    t = torch.rand(z.shape[0], generator=generator, device=where).to(z.device)
    noise = torch.randn(z.shape, generator=generator, device=where).to(z.device)
    pred = model(noised_poses(z, noise, t), t, audio, model.normalise(references.float())).float()
    return torch.nn.functional.mse_loss(pred, velocity_target(z, noise))
