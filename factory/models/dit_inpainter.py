"""The X-Dub Stage I mask-based inpainter (G_mask): a latent flow-matching DiT on diffusers'
`WanTransformer3DModel` that re-renders the masked lower face of a video segment for its audio.

Everything happens in the latent space of a causal video VAE (`AutoencoderKLWan`: F = 1 + 4k video
frames -> 1 + k latent frames, the first frame encoded alone). The transformer sees, along the
frame axis,

    [ N reference latent frames | L target latent frames ]

- reference frames: each reference image encoded alone (so one image = one latent frame), its
  background/mask channels zero; per-token timestep 0 (clean context, X-Dub's reference tokens);
- target frames: channels concat(noised target latent, masked-background latent, mask), where
  the mask is packed Wan-I2V style (the 4 video frames of a latent frame as 4 channels); the first
  `motion_latent_frames` (2 = the 5 video frames that continue the previous segment) are clean
  and at timestep 0, the rest at the flow time t. The output is the velocity v = eps - x0 of the
  target frames.
- no text: a learned (zero-initialised) stand-in for Wan's text embedding;
- audio: a frame-wise audio cross-attention (factory/models/audio_attention.py) after every Wan
  block, on the target tokens only.

The same code runs from a tiny config (tests, CPU) and from a local Wan2.2-TI2V-5B diffusers folder
(`DiTInpainter.from_wan`), whose patch embedding is widened with zero-initialised input channels
and whose new audio projections start at zero, so the pretrained model's output is unchanged at
initialisation. Training loss and sampler: factory/models/flow_matching.py.

Read top to bottom: 1. latents (the contract batch -> model inputs), 2. the model, 3. loading and widening
a pretrained Wan transformer.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, WanTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from factory.config import ConfigError
from factory.models.audio_attention import FrameAudioAttention, group_audio_by_latent_frame

# A CPU-sized model (the shapes of diffusers' own Wan transformer tests); tests and demos.
TINY_DIT = dict(latent_channels=4, patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2, rope_max_seq_len=32,
                audio_dim=8, audio_window=2)

# Config keys handed to WanTransformer3DModel unchanged (the rest belong to the inpainter).
WAN_KEYS = ("patch_size", "num_attention_heads", "attention_head_dim", "text_dim", "freq_dim", "ffn_dim",
            "num_layers", "cross_attn_norm", "qk_norm", "eps", "rope_max_seq_len")


# 1. latents: the contract's batch -> model inputs ---------------------------------------------

def latent_frame_count(frames: int, temporal_compression: int = 4) -> int:
    if (frames - 1) % temporal_compression:
        raise ValueError(f"{frames} frames: the causal video VAE needs 1 + {temporal_compression}k")
    return (frames - 1) // temporal_compression + 1


def _frames_per_latent(mask: torch.Tensor, r: int) -> torch.Tensor:
    """(B, 1, T, H, W) -> (B, r, L, H, W): the r video frames of each latent frame as channels
    (the first frame repeated r-1 times, as the VAE encodes it alone)."""
    b, _, t, h, w = mask.shape
    frames = latent_frame_count(t, r)
    padded = torch.cat([mask[:, :, :1].expand(b, 1, r - 1, h, w), mask], dim=2)  # (B, 1, r*L, H, W)
    return padded.reshape(b, frames, r, h, w).permute(0, 2, 1, 3, 4)


def mask_to_latent_channels(mask: torch.Tensor, size: tuple[int, int], r: int = 4) -> torch.Tensor:
    """The inpainting mask as model input: (B, 1, T, H, W) -> (B, r, L, h, w), area-averaged (the
    share of each latent cell that is to be generated), Wan-I2V style frame packing."""
    packed = _frames_per_latent(mask.float(), r)
    b, c, frames, h, w = packed.shape
    small = F.interpolate(packed.reshape(b, c * frames, h, w), size=size, mode="area")
    return small.reshape(b, c, frames, *size)


def mask_to_latent_weight(mask: torch.Tensor, size: tuple[int, int], r: int = 4) -> torch.Tensor:
    """A loss mask at latent resolution: (B, 1, T, H, W) -> (B, 1, L, h, w); a latent cell counts as
    inside when any pixel of any of its video frames is (lips are small at 16x downsampling)."""
    packed = _frames_per_latent(mask.float(), r).amax(dim=1)  # (B, L, H, W)
    return F.adaptive_max_pool2d(packed, size).unsqueeze(1)


@dataclass
class InpaintLatents:
    """One batch in latent space: what the loss and the sampler consume."""
    target: torch.Tensor  # (B, C, L, h, w) clean target latents x0
    background: torch.Tensor  # (B, C, L, h, w) latents of target * (1 - face_mask)
    mask: torch.Tensor  # (B, r, L, h, w) inpainting mask channels
    references: torch.Tensor  # (B, C, N, h, w) one latent frame per reference image
    audio_features: torch.Tensor | None  # (B, T, W, D) per-video-frame audio windows
    face_weight: torch.Tensor  # (B, 1, L, h, w) {0,1} face mask at latent resolution
    lip_weight: torch.Tensor  # (B, 1, L, h, w) {0,1} lip mask at latent resolution

    def to(self, device) -> "InpaintLatents":
        return InpaintLatents(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                                 for f in fields(self)})


def encode_references(references: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """(B, 3, N, H, W) images -> (B, C, N, h, w): each image encoded alone (one latent frame each)."""
    b, c, n, h, w = references.shape
    singles = references.permute(0, 2, 1, 3, 4).reshape(b * n, c, 1, h, w)
    z = encode(singles)  # (B*N, C, 1, h', w')
    return z.reshape(b, n, *z.shape[1:2], *z.shape[3:]).permute(0, 2, 1, 3, 4)


@torch.no_grad()
def prepare_latents(batch: dict, encode: Callable[[torch.Tensor], torch.Tensor], r: int = 4) -> InpaintLatents:
    """The contract's batch dict -> InpaintLatents. `encode` maps a (B, 3, F, H, W) video in [-1, 1]
    to its (B, C, L, h, w) latents (a VAE wrapper's encode; any scaling is its business)."""
    target, face = batch["target"], batch["face_mask"]
    x0 = encode(target)
    size = tuple(x0.shape[-2:])
    return InpaintLatents(
        target=x0,
        background=encode(target * (1 - face)),
        mask=mask_to_latent_channels(face, size, r),
        references=encode_references(batch["references"], encode),
        audio_features=batch.get("audio_features"),
        face_weight=mask_to_latent_weight(face, size, r),
        lip_weight=mask_to_latent_weight(batch["lip_mask"], size, r),
    )


def noised_frame_mask(motion_frames: int | torch.Tensor, batch: int, frames: int, device) -> torch.Tensor:
    """(B, L) bool: True where a target latent frame is noised (at or after its motion frames)."""
    motion = torch.as_tensor(motion_frames, device=device).reshape(-1).expand(batch)
    return torch.arange(frames, device=device)[None, :] >= motion[:, None]


# 2. the model ---------------------------------------------------------------------------------

class DiTInpainter(ModelMixin, ConfigMixin):
    """Wan transformer + widened input + frame-wise audio cross-attention. Defaults are the
    Wan2.2-TI2V-5B shapes (48 latent channels); `TINY_DIT` is a CPU-sized config."""

    _supports_gradient_checkpointing = True
    ignore_for_config = ["transformer"]

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 48,
        temporal_compression: int = 4,  # video frames per latent frame; also the mask channels
        num_reference_frames: int = 4,
        motion_latent_frames: int = 2,  # 5 video frames bridging segments
        audio_dim: int = 1280,  # Whisper large-v2 encoder width
        audio_window: int = 16,  # audio feature steps per video frame (W)
        audio_heads: int | None = None,  # default: the transformer's heads
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
        transformer: WanTransformer3DModel | None = None,  # a pretrained one, already widened (from_wan)
    ):
        super().__init__()
        wan_kwargs = dict(patch_size=tuple(patch_size), num_attention_heads=num_attention_heads,
                          attention_head_dim=attention_head_dim, text_dim=text_dim, freq_dim=freq_dim,
                          ffn_dim=ffn_dim, num_layers=num_layers, cross_attn_norm=cross_attn_norm,
                          qk_norm=qk_norm, eps=eps, rope_max_seq_len=rope_max_seq_len)
        in_channels = 2 * latent_channels + temporal_compression
        if transformer is None:
            transformer = WanTransformer3DModel(in_channels=in_channels, out_channels=latent_channels, **wan_kwargs)
            zero_extra_input_channels(transformer, latent_channels)
        elif transformer.config.in_channels != in_channels or transformer.config.out_channels != latent_channels:
            raise ValueError(f"transformer takes {transformer.config.in_channels} -> {transformer.config.out_channels} "
                             f"channels; the inpainter needs {in_channels} -> {latent_channels}")
        self.transformer = transformer
        dim = num_attention_heads * attention_head_dim
        self.audio_attention = nn.ModuleList([
            FrameAudioAttention(dim, audio_dim, temporal_compression * audio_window,
                                audio_heads or num_attention_heads, eps)
            for _ in range(num_layers)])
        self.text_context = nn.Parameter(torch.zeros(1, text_tokens, text_dim))  # no text: a learned stand-in
        self.gradient_checkpointing = False

    # -- inputs ---------------------------------------------------------------------------------

    def token_timesteps(self, t: torch.Tensor, latent_frames: int, tokens_per_frame: int,
                        motion_frames: int | torch.Tensor | None = None) -> torch.Tensor:
        """Per-token flow time (B, (N+L)*S) in [0, 1]: 0 for reference tokens and for the clean
        motion frames of the target, t for the noised target frames."""
        b = t.shape[0]
        motion = self.config.motion_latent_frames if motion_frames is None else motion_frames
        noised = noised_frame_mask(motion, b, latent_frames, t.device)
        per_frame = torch.cat([t.new_zeros(b, self.config.num_reference_frames),
                               t[:, None] * noised.to(t.dtype)], dim=1)
        return per_frame.repeat_interleave(tokens_per_frame, dim=1)

    def assemble(self, noisy_target: torch.Tensor, background: torch.Tensor, mask: torch.Tensor,
                 references: torch.Tensor) -> torch.Tensor:
        """[references (extra channels zero) | concat(noisy target, background, mask)] on the frame axis."""
        b, c, n, h, w = references.shape
        if n != self.config.num_reference_frames:
            raise ValueError(f"{n} reference frames; the model was built for {self.config.num_reference_frames}")
        target = torch.cat([noisy_target, background, mask.to(noisy_target.dtype)], dim=1)
        refs = torch.cat([references, references.new_zeros(b, target.shape[1] - c, n, h, w)], dim=1)
        return torch.cat([refs.to(target.dtype), target], dim=2)

    # -- forward --------------------------------------------------------------------------------

    def forward(self, noisy_target: torch.Tensor, t: torch.Tensor, background: torch.Tensor, mask: torch.Tensor,
                references: torch.Tensor, audio_features: torch.Tensor | None = None, *,
                motion_frames: int | torch.Tensor | None = None,
                audio_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity of the target latents.

        noisy_target, background: (B, C, L, h, w); mask: (B, r, L, h, w); references (B, C, N, h, w);
        t: (B,) flow time in [0, 1]; audio_features (B, 1 + r(L-1), W, D) or None (no audio: the
        unconditional branch of CFG); motion_frames: clean leading target frames (int or (B,),
        default the config's); audio_keep: (B,) 0/1, per-sample audio dropout. Returns (B, C, L, h, w).
        """
        wan = self.transformer
        x = self.assemble(noisy_target, background, mask, references).to(wan.patch_embedding.weight.dtype)
        b, _, frames, h, w = x.shape
        p_t, p_h, p_w = wan.config.patch_size
        tokens_per_frame = (h // p_h) * (w // p_w)
        latent_frames = noisy_target.shape[2]
        n_ref_tokens = self.config.num_reference_frames * tokens_per_frame

        # Wan's own embedding path, with a per-token timestep (the Wan 2.2 TI2V path); Wan wants t*1000
        timestep = self.token_timesteps(t.float(), latent_frames, tokens_per_frame, motion_frames) * 1000
        rotary = wan.rope(x)
        hidden = wan.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()
        context = self.text_context.expand(b, -1, -1).to(hidden.dtype)
        temb, proj, context, _ = wan.condition_embedder(timestep.flatten(), context, None,
                                                        timestep_seq_len=timestep.shape[1])
        proj = proj.unflatten(2, (6, -1))

        audio = None
        if audio_features is not None:
            audio = group_audio_by_latent_frame(audio_features, latent_frames, self.config.temporal_compression)
            audio = audio.to(hidden.dtype)
        checkpointing = torch.is_grad_enabled() and self.gradient_checkpointing

        # each Wan block, then the frame-wise audio cross-attention on the target tokens only
        for block, audio_attention in zip(wan.blocks, self.audio_attention):
            if checkpointing:
                hidden = self._gradient_checkpointing_func(block, hidden, context, proj, rotary)
            else:
                hidden = block(hidden, context, proj, rotary)
            if audio is None:
                continue
            target_tokens = hidden[:, n_ref_tokens:]
            if checkpointing:
                delta = self._gradient_checkpointing_func(audio_attention, target_tokens, audio)
            else:
                delta = audio_attention(target_tokens, audio)
            if audio_keep is not None:
                delta = delta * audio_keep.to(delta.dtype).reshape(b, 1, 1)
            hidden = torch.cat([hidden[:, :n_ref_tokens], target_tokens + delta], dim=1)

        # Wan's output head, per token (temb is per token here), then unpatchify
        shift, scale = (wan.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
        hidden = (wan.norm_out(hidden.float()) * (1 + scale.squeeze(2)) + shift.squeeze(2)).type_as(hidden)
        hidden = wan.proj_out(hidden)
        hidden = hidden.reshape(b, frames // p_t, h // p_h, w // p_w, p_t, p_h, p_w, -1)
        out = hidden.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
        return out[:, :, self.config.num_reference_frames:]

    # -- loading a pretrained Wan --------------------------------------------------------------

    @classmethod
    def from_wan(cls, path: str | Path, *, key: str = "wan_path", torch_dtype: torch.dtype | None = None,
                 **inpainter_kwargs) -> "DiTInpainter":
        """Start from a local diffusers Wan folder (its `transformer/` subfolder), the way X-Dub
        starts from Wan2.2-TI2V-5B: the patch embedding widened with zero-initialised channels,
        new audio attentions with zero output. `key` names the config key in errors;
        `inpainter_kwargs`: audio_dim, audio_window, num_reference_frames, ... ."""
        folder = Path(path)
        if not (folder / "transformer" / "config.json").is_file():
            raise ConfigError(f"config key {key!r} = {str(path)!r}: no transformer/config.json there "
                              "(a local diffusers Wan folder, e.g. Wan2.2-TI2V-5B-Diffusers)")
        wan = load_wan_transformer(folder / "transformer", torch_dtype)
        latent_channels = wan.config.in_channels
        if wan.config.out_channels not in (None, latent_channels):
            raise ConfigError(f"config key {key!r}: the transformer maps {latent_channels} -> "
                              f"{wan.config.out_channels} channels; expected a latent-to-latent Wan")
        r = inpainter_kwargs.get("temporal_compression", 4)
        widen_patch_embedding(wan, 2 * latent_channels + r)
        wan_config = {k: wan.config[k] for k in WAN_KEYS}
        model = cls(latent_channels=latent_channels, transformer=wan, **wan_config, **inpainter_kwargs)
        if torch_dtype is not None:  # only the new parts: Wan keeps its fp32 modules (rope, norms) as loaded
            model.audio_attention.to(torch_dtype)
            model.text_context.data = model.text_context.data.to(torch_dtype)
        return model


# 3. a pretrained Wan transformer, widened ------------------------------------------------------

def load_wan_transformer(folder: Path, torch_dtype: torch.dtype | None = None) -> WanTransformer3DModel:
    """diffusers' `from_pretrained` (local files only). It needs `accelerate` for Wan (its fp32-kept
    modules force low_cpu_mem_usage); without it, the same config and safetensors shards are read
    directly (a random init first: slower, same weights)."""
    if importlib.util.find_spec("accelerate") is not None:
        return WanTransformer3DModel.from_pretrained(folder, local_files_only=True, torch_dtype=torch_dtype)
    from safetensors.torch import load_file

    wan = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(folder, local_files_only=True))
    shards = sorted(folder.glob("*.safetensors"))
    if not shards:
        raise ConfigError(f"{folder}: no *.safetensors weights beside config.json")
    state = {}
    for shard in shards:
        state.update(load_file(str(shard)))
    wan.load_state_dict(state, strict=True)
    return wan.to(torch_dtype) if torch_dtype is not None else wan


def zero_extra_input_channels(wan: WanTransformer3DModel, keep: int) -> None:
    """Zero the patch-embedding weights of input channels >= keep (background latent, mask)."""
    with torch.no_grad():
        wan.patch_embedding.weight[:, keep:] = 0


def widen_patch_embedding(wan: WanTransformer3DModel, in_channels: int) -> None:
    """Give a pretrained Wan more input channels: the old weights kept, the new ones zero, so its
    output is unchanged at init whatever the new channels hold."""
    old = wan.patch_embedding
    if in_channels <= old.in_channels:
        raise ValueError(f"widening to {in_channels} channels: the transformer already has {old.in_channels}")
    new = nn.Conv3d(in_channels, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    wan.patch_embedding = new
    wan.register_to_config(in_channels=in_channels)
