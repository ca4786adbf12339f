"""Frame-wise audio cross-attention: each latent frame's tokens listen to the audio of the video
frames that latent frame covers, and to nothing else.

X-Dub's DiT block splits its tokens into reference and target halves and gives only the target
half an audio cross-attention, frame by frame (audio reshaped per frame). diffusers 0.42.1 has no
audio Wan block, so this is ours. A causal video VAE maps F = 1 + 4k video frames to 1 + k latent
frames: latent frame 0 is video frame 0 alone, latent frame j >= 1 is video frames 4j-3 .. 4j. The
first video frame's audio is repeated so every latent frame owns the same number of audio tokens
(`group_audio_by_latent_frame`), then attention runs per latent frame as a batch of short
sequences (no attention mask needed).

The output projection starts at zero, so adding this module to a pretrained DiT leaves the DiT's
behaviour unchanged until training moves it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_audio_by_latent_frame(audio_features: torch.Tensor, latent_frames: int,
                                temporal_compression: int = 4) -> torch.Tensor:
    """(B, T, W, D) per-video-frame audio windows -> (B, L, r*W, D), r = temporal_compression.

    T must be 1 + r*(L-1) (the causal VAE's frame arithmetic); the first video frame's window is
    repeated r-1 times so latent frame 0 owns r windows like every other latent frame."""
    b, t, w, d = audio_features.shape
    r = temporal_compression
    if t != 1 + r * (latent_frames - 1):
        raise ValueError(f"audio covers {t} video frames; {latent_frames} latent frames need "
                         f"{1 + r * (latent_frames - 1)} (1 + {r}k)")
    first = audio_features[:, :1].expand(b, r - 1, w, d)
    padded = torch.cat([first, audio_features], dim=1)  # (B, r*L, W, D)
    return padded.reshape(b, latent_frames, r * w, d)


class FrameAudioAttention(nn.Module):
    """Tokens of latent frame j attend to the audio tokens of latent frame j; returns the residual
    to add to the tokens (zero at init)."""

    def __init__(self, dim: int, audio_dim: int, audio_tokens: int, heads: int, eps: float = 1e-6):
        super().__init__()
        if dim % heads:
            raise ValueError(f"audio attention: dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        # order of the r*W audio tokens inside a latent frame (attention alone is order-blind)
        self.audio_pos = nn.Parameter(torch.randn(1, audio_tokens, audio_dim) * 0.02)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(audio_dim, dim)
        self.to_v = nn.Linear(audio_dim, dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        self.to_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, tokens: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """tokens (B, L*S, dim) in frame-major order (S tokens per latent frame);
        audio (B, L, A, audio_dim) from `group_audio_by_latent_frame`. Returns (B, L*S, dim)."""
        b, n, dim = tokens.shape
        _, frames, a, _ = audio.shape
        if n % frames:
            raise ValueError(f"{n} tokens do not split into {frames} latent frames")
        s, h = n // frames, self.heads
        x = self.norm(tokens.float()).type_as(tokens).reshape(b * frames, s, dim)
        audio = (audio + self.audio_pos.to(audio.dtype)).reshape(b * frames, a, -1).to(tokens.dtype)
        q = self.norm_q(self.to_q(x)).unflatten(-1, (h, -1)).transpose(1, 2)
        k = self.norm_k(self.to_k(audio)).unflatten(-1, (h, -1)).transpose(1, 2)
        v = self.to_v(audio).unflatten(-1, (h, -1)).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B*L, heads, S, dim/heads)
        out = out.transpose(1, 2).reshape(b, n, dim)
        return self.to_out(out)
