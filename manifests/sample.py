"""How a pair is stored in a sample (format 2), shared by the encode stage and the reader.

Real and synthetic frames are equal outside the compositing alpha, bit for bit, in memory. Two
lossy streams encoded apart would break that after decoding (each has its own coding noise), so
the synthetic side is not stored whole:

- `real.mp4`        the real crops, H.264 yuv420p (hardware-decodable)
- `syn_region.mp4`  the synthetic frames inside `syn_box` only (the box around the alpha's
                    support, over all frames), H.264 yuv420p
- `alpha.npz`       the per-frame compositing alpha (T, S, S) uint8 0-255, lossless
- meta.json `storage` = {"format": 2, "syn_box": [x0, y0, x1, y1]}

The reader rebuilds `syn` from the decoded real frames: where alpha == 0 it *is* decoded real
(so outside the mask syn == real exactly, as the model must learn); inside, the decoded region,
ramped in over the first RAMP alpha levels so the two streams' coding noise does not leave a seam.
"""

from __future__ import annotations

import io

import numpy as np

SAMPLE_FORMAT = 2
# members every format-2 sample has (motion.mp4 and speech.npy only when there are any)
REQUIRED_MEMBERS = frozenset({"real.mp4", "syn_region.mp4", "alpha.npz", "real.wav", "alt.wav", "real_landmarks.npy",
                              "syn_landmarks.npy", "real_landmarks_valid.npy", "syn_landmarks_valid.npy",
                              "transforms.npy", "mask.png", "meta.json"})
RAMP = 16  # alpha levels (of 255) over which syn goes from decoded real to the decoded region
BOX_ALIGN = 64  # the box edges sit on the codec's block grid, and rows are whole 64-byte lines (unpadded planes: see encode)
BOX_MARGIN = 8  # pixels of context around the support, so the codec's blocks at its edge see it


def syn_box(alpha: np.ndarray) -> list[int]:
    """[x0, y0, x1, y1] around every pixel any frame's alpha touches, widened by BOX_MARGIN and
    snapped outwards to BOX_ALIGN (even sizes, as yuv420p needs); the whole crop if none does."""
    height, width = alpha.shape[-2:]
    ys, xs = np.nonzero(alpha.max(axis=0) if alpha.ndim == 3 else alpha)
    if len(ys) == 0:
        return [0, 0, width, height]

    def lo(v):
        return max(0, (v - BOX_MARGIN) // BOX_ALIGN * BOX_ALIGN)

    def hi(v, limit):
        return min(limit, -(-(v + 1 + BOX_MARGIN) // BOX_ALIGN) * BOX_ALIGN) // 2 * 2

    return [lo(int(xs.min())), lo(int(ys.min())), hi(int(xs.max()), width), hi(int(ys.max()), height)]


def alpha_bytes(alpha: np.ndarray) -> bytes:
    """Lossless and small: the first frame, then frame-to-frame differences (mod 256), deflated.
    A static mask costs one frame; a moving occluder only what changes."""
    alpha = np.asarray(alpha, np.uint8)
    delta = np.diff(alpha, axis=0, prepend=np.zeros_like(alpha[:1]))  # uint8 arithmetic wraps
    buf = io.BytesIO()
    np.savez_compressed(buf, delta=delta)
    return buf.getvalue()


def read_alpha(data: bytes) -> np.ndarray:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        alpha = npz["delta"]
    for t in range(1, len(alpha)):  # undoes the wrapping differences (100x faster than np.cumsum on uint8)
        alpha[t] += alpha[t - 1]
    return alpha


def rebuild_syn(real: np.ndarray, region: np.ndarray, alpha: np.ndarray, box: list[int],
                ramp: int = RAMP) -> np.ndarray:
    """The synthetic frames: decoded real where alpha == 0, the decoded region inside."""
    shift = ramp.bit_length() - 1
    assert ramp == 1 << shift, "ramp is a power of two (the blend divides by shifting)"
    x0, y0, x1, y1 = box
    syn = real.copy()
    inside = alpha[:, y0:y1, x0:x1]
    # each frame only inside its own alpha's bounding box (the box is every frame's, widened and
    # snapped): outside it alpha == 0 and syn is the copied real already; 4x less work per pair
    rows, cols = inside.any(axis=2), inside.any(axis=1)
    for t in range(len(inside)):
        ys, xs = np.flatnonzero(rows[t]), np.flatnonzero(cols[t])
        if not len(ys):
            continue
        r0, r1, c0, c1 = y0 + ys[0], y0 + ys[-1] + 1, x0 + xs[0], x0 + xs[-1] + 1
        w = np.minimum(alpha[t, r0:r1, c0:c1], ramp).astype(np.int16)[..., None]  # 0..ramp
        base = real[t, r0:r1, c0:c1].astype(np.int16)
        # base + round((region - base) * w / ramp), in place on int16: w == 0 gives real back
        # exactly, w == ramp the region exactly
        d = region[t, r0 - y0:r1 - y0, c0 - x0:c1 - x0].astype(np.int16)
        d -= base
        d *= w
        d += ramp // 2
        d >>= shift
        d += base
        syn[t, r0:r1, c0:c1] = d
    return syn
