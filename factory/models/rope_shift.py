"""3D RoPE for X-Dub Stage II's frame-concatenated input: reference tokens temporally aligned with
the target, spatially shifted (X-Dub App. A.4).

The editor's transformer sees [reference latent frames | target latent frames] along the frame
axis. Wan's own RoPE (`WanRotaryPosEmbed`) would number those frames 0 .. N+L-1, so reference
frame k and target frame k would sit N frames apart in time and on the same pixels in space. Here
a target token at (frame k, row i, column j) keeps the position (k, i, j) and the reference token
at the same place gets (k, i + h', j + w'): the same time (the synthetic frame k shows the moment
the real frame k shows), a different place (the model can tell the two apart, as if they were
laid side by side on one canvas). Positions are in token units (after patching).

`ShiftedRope` wraps the transformer's `rope` module and reads its frequency tables (non-persistent
buffers: state dicts do not change), so a Stage I DiT's weights load unchanged and only its
positions differ. Wan's tables hold `rope_max_seq_len` positions per axis: the shifted positions
must stay below it (checked).
"""

from __future__ import annotations

import torch
from torch import nn


def token_positions(reference_frames: int, frames: int, height: int, width: int,
                    shift: tuple[int, int]) -> torch.Tensor:
    """(N*h*w + L*h*w, 3) integer (frame, row, column) positions, frame-major like Wan's tokens:
    the N reference frames first (frame index k aligned with target frame k, rows + h', columns + w'),
    then the L target frames (their plain grid). `frames` is L; N <= L."""
    if reference_frames > frames:
        raise ValueError(f"{reference_frames} reference frames cannot align with {frames} target frames")
    k, i, j = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    target = torch.stack([k, i, j], dim=-1).reshape(-1, 3)
    ref = torch.stack([k[:reference_frames], i[:reference_frames] + shift[0], j[:reference_frames] + shift[1]],
                      dim=-1).reshape(-1, 3)
    return torch.cat([ref, target])


class ShiftedRope(nn.Module):
    """Drop-in for `WanTransformer3DModel.rope`: `forward(hidden (B, C, N+L, H, W))` -> (cos, sin),
    each (1, seq, 1, head_dim), with the reference frames' positions shifted by `shift` tokens
    (None: (0, w), the reference canvas right beside the target's)."""

    def __init__(self, base: nn.Module, reference_frames: int, shift: tuple[int, int] | None = None):
        super().__init__()
        self.base, self.reference_frames = base, reference_frames
        self.shift = None if shift is None else (int(shift[0]), int(shift[1]))

    def positions(self, frames: int, height: int, width: int) -> torch.Tensor:
        """Token positions for a (frames, height, width) token grid of reference + target frames."""
        n = self.reference_frames
        shift = self.shift if self.shift is not None else (0, width)
        pos = token_positions(n, frames - n, height, width, shift)
        limit = self.base.max_seq_len
        if int(pos.max()) >= limit:
            raise ValueError(f"shifted RoPE positions reach {int(pos.max())}; the transformer's tables hold "
                             f"{limit} (raise rope_max_seq_len or lower the shift)")
        return pos

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, num_frames, height, width = hidden_states.shape
        p_t, p_h, p_w = self.base.patch_size
        pos = self.positions(num_frames // p_t, height // p_h, width // p_w).to(self.base.freqs_cos.device)
        sizes = [self.base.t_dim, self.base.h_dim, self.base.w_dim]
        out = []
        for table in (self.base.freqs_cos, self.base.freqs_sin):
            parts = table.split(sizes, dim=1)
            out.append(torch.cat([parts[a][pos[:, a]] for a in range(3)], dim=-1)[None, :, None, :])
        return out[0], out[1]
