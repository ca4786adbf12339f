"""FlashLips Stage 1: a single-pass latent editor that redraws the lower face to a given lip pose.

Everything happens in an image VAE's latent space (FlashLips uses the SDXL VAE, diffusers'
`AutoencoderKL`; a tiny one in tests), one frame at a time:

    z_masked = E(frame * (1 - face_mask))         the frame with its lower face zeroed
    z_ref    = E(reference frames)                 other frames of the same video (identity, teeth)
    z_lips   = LipPoseEncoder(landmarks, frame)    12-D lip pose (factory/models/lip_pose.py)
    residual = UNet(concat(z_masked, f_ref(z_ref), broadcast(z_lips)))
    z_hat    = z_masked + residual                 trained towards z_src = E(frame)

`f_ref` is a small conv encoder applied to each reference latent; the N references are averaged
("mean": any N works) or stacked on the channel axis ("concat": N fixed by `num_references`).
Besides the broadcast at the input, the lip pose also modulates every ResNet block (scale and
shift of its GroupNorm, the way diffusers' UNets take a timestep embedding), so the pose reaches
the deep layers. The output conv starts at zero: at initialisation z_hat == z_masked exactly.

The VAE is passed in (a diffusers `AutoencoderKL` and its scaling factor), frozen; training
losses are in factory/models/editor_losses.py. `edit_frames` is the factory's use: each real frame
edited toward the alternative clip's lip poses, batched, under `torch.no_grad`, bf16 on CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from torch import nn

from factory.models.lip_pose import LipPoseEncoder


# 1. the VAE: frames <-> latents -----------------------------------------------------------------

def frozen(vae: nn.Module) -> nn.Module:
    """The VAE as the editor uses it: eval mode, no parameter gradients (pixel losses still
    backpropagate *through* its decoder to the editor)."""
    return vae.eval().requires_grad_(False)


def _scale_shift(vae, scaling_factor: float | None) -> tuple[float, float]:
    scale = scaling_factor if scaling_factor is not None else vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0  # SD3/Flux VAEs have one; SDXL's is None
    return float(scale), float(shift)


def encode_frames(vae, frames: torch.Tensor, scaling_factor: float | None = None, chunk: int = 32) -> torch.Tensor:
    """(N, 3, S, S) in [-1, 1] -> (N, C, S/f, S/f) scaled latents (the posterior's mode: deterministic)."""
    scale, shift = _scale_shift(vae, scaling_factor)
    dtype = next(vae.parameters()).dtype
    parts = [vae.encode(x.to(dtype)).latent_dist.mode() for x in frames.split(chunk)]
    return (torch.cat(parts) - shift) * scale


def decode_latents(vae, latents: torch.Tensor, scaling_factor: float | None = None) -> torch.Tensor:
    """Scaled latents -> (N, 3, S, S) frames (about [-1, 1]; not clamped, so pixel losses keep gradients)."""
    scale, shift = _scale_shift(vae, scaling_factor)
    dtype = next(vae.parameters()).dtype
    return vae.decode((latents / scale + shift).to(dtype)).sample


# 2. the editor ----------------------------------------------------------------------------------

class _Level(nn.Module):
    """ResNet blocks at one resolution, each modulated by the lip embedding."""

    def __init__(self, in_channels: int, out_channels: int, layers: int, temb: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels=in_channels if i == 0 else out_channels, out_channels=out_channels,
                          temb_channels=temb, groups=groups, time_embedding_norm="scale_shift")
            for i in range(layers))

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for block in self.resnets:
            h = block(h, temb)
        return h


class LatentEditor(ModelMixin, ConfigMixin):
    """(z_masked, z_ref, lip pose) -> z_hat = z_masked + predicted residual, per frame."""

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,  # the VAE's (SDXL: 4)
        lip_dim: int = 12,  # LipPoseEncoder.pose_dim
        ref_channels: int = 16,  # f_ref's output channels per reference (after fusion for "mean")
        ref_fusion: str = "mean",  # "mean" over the N references | "concat" (N = num_references)
        num_references: int = 4,  # used by "concat" only
        block_out_channels: tuple[int, ...] = (128, 256, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        lip_embed_dim: int = 256,
    ):
        super().__init__()
        if ref_fusion not in ("mean", "concat"):
            raise ValueError(f"ref_fusion must be 'mean' or 'concat', got {ref_fusion!r}")
        c0 = block_out_channels[0]
        self.f_ref = nn.Sequential(
            nn.Conv2d(latent_channels, c0, 3, padding=1), nn.GroupNorm(norm_num_groups, c0), nn.SiLU(),
            nn.Conv2d(c0, ref_channels, 3, padding=1))
        fused = ref_channels * (num_references if ref_fusion == "concat" else 1)
        self.lip_embedding = nn.Sequential(nn.Linear(lip_dim, lip_embed_dim), nn.SiLU(),
                                           nn.Linear(lip_embed_dim, lip_embed_dim))
        self.conv_in = nn.Conv2d(latent_channels + fused + lip_dim, c0, 3, padding=1)

        levels = len(block_out_channels)
        self.down = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        channels = c0
        for i, out in enumerate(block_out_channels):
            self.down.append(_Level(channels, out, layers_per_block, lip_embed_dim, norm_num_groups))
            self.downsamplers.append(Downsample2D(out, use_conv=True, name="op") if i < levels - 1 else nn.Identity())
            channels = out
        self.mid = _Level(channels, channels, 1, lip_embed_dim, norm_num_groups)
        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for i in reversed(range(levels)):  # each level takes its down twin's output as a skip
            out = block_out_channels[i]
            self.up.append(_Level(channels + out, out, layers_per_block, lip_embed_dim, norm_num_groups))
            self.upsamplers.append(Upsample2D(out, use_conv=True) if i > 0 else nn.Identity())
            channels = out
        self.norm_out = nn.GroupNorm(norm_num_groups, channels)
        self.conv_out = nn.Conv2d(channels, latent_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # residual 0 at init: z_hat starts as z_masked
        nn.init.zeros_(self.conv_out.bias)

    @property
    def downsampling(self) -> int:
        """Latent sides must be multiples of this."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def reference_features(self, z_ref: torch.Tensor) -> torch.Tensor:
        """(B, N, C, h, w) reference latents -> (B, F, h, w): f_ref on each, fused over N."""
        b, n = z_ref.shape[:2]
        feats = self.f_ref(z_ref.flatten(0, 1)).unflatten(0, (b, n))
        if self.config.ref_fusion == "mean":
            return feats.mean(dim=1)
        if n != self.config.num_references:
            raise ValueError(f"ref_fusion 'concat' needs {self.config.num_references} references, got {n}")
        return feats.flatten(1, 2)

    def predict_residual(self, z_masked: torch.Tensor, z_ref: torch.Tensor, lips: torch.Tensor,
                         frames_per_reference_set: int = 1) -> torch.Tensor:
        """z_masked (N, C, h, w), z_ref (N / frames_per_reference_set, R, C, h, w), lips (N, lip_dim)
        -> residual (N, C, h, w). One reference set serves `frames_per_reference_set` consecutive
        frames (the T frames of one segment), so f_ref runs once per set, not once per frame."""
        h, w = z_masked.shape[-2:]
        if h % self.downsampling or w % self.downsampling:
            raise ValueError(f"latent size {h}x{w} is not a multiple of {self.downsampling}")
        dtype = self.conv_in.weight.dtype
        z_masked, z_ref, lips = z_masked.to(dtype), z_ref.to(dtype), lips.to(dtype)
        ref = self.reference_features(z_ref).repeat_interleave(frames_per_reference_set, dim=0)
        x = torch.cat([z_masked, ref, lips[:, :, None, None].expand(-1, -1, h, w)], dim=1)
        temb = self.lip_embedding(lips)

        x = self.conv_in(x)
        skips = []
        for level, down in zip(self.down, self.downsamplers):
            x = level(x, temb)
            skips.append(x)
            x = down(x)
        x = self.mid(x, temb)
        for level, up in zip(self.up, self.upsamplers):
            x = level(torch.cat([x, skips.pop()], dim=1), temb)
            x = up(x)
        return self.conv_out(F.silu(self.norm_out(x)))

    def forward(self, z_masked: torch.Tensor, z_ref: torch.Tensor, lips: torch.Tensor,
                frames_per_reference_set: int = 1) -> torch.Tensor:
        """z_hat = z_masked + predicted residual (shapes as `predict_residual`)."""
        return z_masked + self.predict_residual(z_masked, z_ref, lips, frames_per_reference_set).to(z_masked.dtype)


# 3. inference: edit real frames toward another clip's lip poses ---------------------------------

@torch.no_grad()
def edit_frames(editor: LatentEditor, lip_encoder: LipPoseEncoder, vae, frames: torch.Tensor, masks: torch.Tensor,
                references: torch.Tensor, target_frames: torch.Tensor, target_landmarks: torch.Tensor,
                batch_size: int = 16, scaling_factor: float | None = None) -> torch.Tensor:
    """Edit each real frame so its lips take the pose of the matching target frame.

    frames (T, 3, S, S) in [-1, 1] the real clip; masks (T, 1, S, S) {0, 1} the lower face to
    redraw; references (N, 3, S, S) frames of the same video; target_frames (T, 3, S, S) and
    target_landmarks (T, K, 2) in [0, 1] the alternative clip, whose lip poses drive the edit
    (frame i of the output follows frame i of the target). Returns (T, 3, S, S) float32 in
    [-1, 1]: the decoded frames whole (compositing back onto the real frame is the caller's job).
    """
    t = frames.shape[0]
    if target_frames.shape[0] != t or target_landmarks.shape[0] != t or masks.shape[0] != t:
        raise ValueError(f"frames, masks, target_frames and target_landmarks need the same length: {t}, "
                         f"{masks.shape[0]}, {target_frames.shape[0]}, {target_landmarks.shape[0]}")
    device = next(editor.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    out = []
    with autocast:
        z_ref = encode_frames(vae, references.to(device), scaling_factor)[None]  # (1, N, C, h, w)
        for i in range(0, t, batch_size):
            real = frames[i:i + batch_size].to(device)
            mask = masks[i:i + batch_size].to(device, real.dtype)
            lips = lip_encoder(target_landmarks[i:i + batch_size].to(device), target_frames[i:i + batch_size].to(device))
            z_masked = encode_frames(vae, real * (1 - mask), scaling_factor)
            z_hat = editor(z_masked, z_ref, lips, frames_per_reference_set=len(real))
            out.append(decode_latents(vae, z_hat, scaling_factor).float().clamp(-1, 1).cpu())
    return torch.cat(out)
