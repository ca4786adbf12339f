"""Training-free generator: transplant the alternative clip's mouth onto the real frames.

Both clips are aligned to the same canonical template, so the alternative clip's lower face
already sits where the real one is. Its colours are matched to the real clip inside the mask with
one affine per channel for the whole clip (per-frame statistics would flicker), and the stage
feathers it in. No weights: this is the factory's out-of-the-box generator on CPU.
"""

from __future__ import annotations

import numpy as np

from factory.generators.base import GenerationInput, Generator, register


def match_colours(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift and scale each channel of `source` so its masked mean/std equal `target`'s."""
    sel = mask.astype(bool)
    src = source[:, sel].astype(np.float32)  # (T, N, 3)
    tgt = target[:, sel].astype(np.float32)
    src_mean, src_std = src.mean((0, 1)), src.std((0, 1)) + 1e-3
    tgt_mean, tgt_std = tgt.mean((0, 1)), tgt.std((0, 1)) + 1e-3
    scaled = (source.astype(np.float32) - src_mean) * (tgt_std / src_std) + tgt_mean
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@register
class TransplantGenerator(Generator):
    name = "transplant"
    version = "1"

    def generate(self, inp: GenerationInput) -> np.ndarray:
        n = min(len(inp.real_frames), len(inp.alt_frames))
        mouth = inp.alt_frames[:n]
        if self.cfg.colour_match:
            mouth = match_colours(mouth, inp.real_frames[:n], inp.mask)
        return mouth
