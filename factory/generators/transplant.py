"""Training-free generator: transplant the alternative clip's mouth onto the real frames.

Both clips are aligned to the same canonical template, so the alternative clip's lower face
already sits where the real one is. Its colours are matched to the real clip inside the mask with
one affine per channel for the whole clip (per-frame statistics would flicker), and the stage
feathers it in. No weights: this is the factory's out-of-the-box generator on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factory.generators.base import GenerationInput, Generator, register


@dataclass
class TransplantSettings:
    colour_match: bool = True  # match the transplanted mouth's colours to the real clip


def match_colours(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift and scale each channel of `source` so its masked mean/std equal `target`'s.
    `mask` is (S, S) or per frame (T, S, S)."""
    sel = mask.astype(bool)
    if sel.ndim == 3 and (sel == sel[:1]).all():
        sel = sel[0]  # a static mask: one gather for all frames (the same sums as ever, bit for bit)
    if sel.ndim == 2:
        src, tgt = source[:, sel].astype(np.float32), target[:, sel].astype(np.float32)  # (T, N, 3)
        axes = (0, 1)
    else:
        src, tgt = source[sel].astype(np.float32), target[sel].astype(np.float32)  # (N, 3)
        axes = 0
    src_mean, src_std = src.mean(axes), src.std(axes) + 1e-3
    tgt_mean, tgt_std = tgt.mean(axes), tgt.std(axes) + 1e-3
    scaled = (source.astype(np.float32) - src_mean) * (tgt_std / src_std) + tgt_mean
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@register
class TransplantGenerator(Generator):
    name = "transplant"
    version = "1"
    Settings = TransplantSettings

    def generate(self, inp: GenerationInput) -> np.ndarray:
        n = min(len(inp.real_frames), len(inp.alt_frames))
        mouth = inp.alt_frames[:n]
        if self.settings.colour_match:
            mouth = match_colours(mouth, inp.real_frames[:n], inp.masks[:n])
        return mouth
