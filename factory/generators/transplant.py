"""Training-free generator: transplant the alternative clip's mouth onto the real frames.

Both clips are aligned to the same canonical template, but only to within a few pixels per frame:
so each alternative frame is first registered onto the real one on the nose (a similarity per
frame, factory.faces.registration), which keeps the seam under the nose still. Occluders in the
alternative frames (a hand, a microphone) are not pasted: there the real pixels are kept. Colours
are matched to the real clip inside the mask with one affine per channel for the whole clip
(per-frame statistics would flicker), and the stage feathers it in. No weights: this is the
factory's out-of-the-box generator on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from factory.faces.masks import dilate
from factory.faces.registration import move_frames, register

from factory.generators.base import GenerationInput, Generator
from factory.generators.base import register as register_generator


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


@register_generator
class TransplantGenerator(Generator):
    name = "transplant"
    version = "2"  # 2: per-frame registration, alternative occluders not pasted
    Settings = TransplantSettings

    def generate(self, inp: GenerationInput) -> np.ndarray:
        n = min(len(inp.real_frames), len(inp.alt_frames))
        real = inp.real_frames[:n]
        moves = inp.alt_registration
        if moves is None:  # called outside the generate stage
            moves = register(inp.alt_frames[:n], real, inp.real_landmarks[:n])
        moves = moves[:n]
        mouth = move_frames(inp.alt_frames[:n], moves)
        stats = inp.masks[:n].astype(bool)
        if inp.alt_occlusion is not None:
            occluded = move_frames(inp.alt_occlusion[:n].astype(np.uint8), moves, nearest=True).astype(bool)
            stats = stats & ~occluded  # an occluder's colours would skew the match
        if self.settings.colour_match:
            mouth = match_colours(mouth, real, stats)
        if inp.alt_occlusion is not None:
            mouth = keep_real_under(occluded, mouth, real)
        return mouth


def keep_real_under(occluded: np.ndarray, mouth: np.ndarray, real: np.ndarray) -> np.ndarray:
    """The real pixels wherever the alternative frame is occluded, faded in over a few pixels
    around it (a hard edge would draw the occluder's outline into the synthetic frame)."""
    sigma = 1.5 * occluded.shape[-1] / 256
    weights = []
    for frame in occluded:
        w = cv2.GaussianBlur(dilate(frame.astype(np.uint8), round(2 * sigma)).astype(np.float32), (0, 0), sigma)
        weights.append(np.maximum(w, frame))
    w = np.stack(weights)[..., None]
    out = mouth.astype(np.float32) * (1 - w) + real.astype(np.float32) * w
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
