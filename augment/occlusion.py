"""Moving synthetic occluders (textured shapes, objects cut out of real photos, hand-like blobs),
drawn identically on both sides
of a pair so the pair stays frame-aligned and the dubber learns to keep occluders, not paint over
them. Everything is drawn from the parameters: the same parameters redraw the same pixels."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import cv2
import numpy as np

KINDS = ("ellipse", "polygon", "hand", "cutout")
CUTOUT_PHOTOS = ("coffee", "rocket", "chelsea", "astronaut")  # scikit-image's bundled photos


@functools.lru_cache(maxsize=len(CUTOUT_PHOTOS))
def _photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


@dataclass
class OcclusionParams:
    kind: str
    start: tuple[float, float]  # centre at the first frame, as a fraction of the crop
    end: tuple[float, float]  # centre at the last frame
    size: float  # fraction of the crop
    colour: tuple[int, int, int]
    texture_seed: int
    opacity: float
    angle: float  # degrees

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "OcclusionParams":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})  # JSON lists


def sample_params(rng: np.random.Generator) -> OcclusionParams:
    """An occluder that crosses the lower face, where occlusions hurt dubbing most."""
    kind = KINDS[int(rng.integers(len(KINDS)))]
    start = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.55, 0.95)))
    end = (float(np.clip(start[0] + rng.uniform(-0.3, 0.3), 0, 1)), float(np.clip(start[1] + rng.uniform(-0.2, 0.1), 0, 1)))
    skin = (int(rng.integers(150, 235)), int(rng.integers(100, 180)), int(rng.integers(80, 150)))
    colour = skin if kind == "hand" else tuple(int(c) for c in rng.integers(0, 256, 3))
    return OcclusionParams(kind, start, end, float(rng.uniform(0.15, 0.3)), colour,
                           int(rng.integers(2**31)), float(rng.uniform(0.85, 1.0)), float(rng.uniform(0, 180)))


def occluder_mask(p: OcclusionParams, t: float, size: int) -> np.ndarray:
    """Float (size, size) coverage in [0, 1] of the occluder at time t in [0, 1]."""
    cx = (p.start[0] + (p.end[0] - p.start[0]) * t) * size
    cy = (p.start[1] + (p.end[1] - p.start[1]) * t) * size
    r = p.size * size / 2
    mask = np.zeros((size, size), np.float32)
    centre = (int(round(cx)), int(round(cy)))
    if p.kind in ("ellipse", "cutout"):  # a cut-out object: an oval piece of a real photo
        cv2.ellipse(mask, centre, (int(r), int(r * 0.6)), p.angle, 0, 360, 1.0, -1)
    elif p.kind == "polygon":
        angles = np.deg2rad(p.angle + np.arange(5) * 72 + np.array([0, 10, -8, 14, -5]))
        pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1.0)
    else:  # a hand: a palm and four fingers reaching up
        cv2.ellipse(mask, centre, (int(r * 0.55), int(r * 0.7)), p.angle, 0, 360, 1.0, -1)
        direction = np.deg2rad(p.angle - 90)
        for i, spread in enumerate((-0.45, -0.15, 0.15, 0.45)):
            base = np.array([cx, cy]) + r * 0.5 * np.array([np.cos(direction + spread), np.sin(direction + spread)])
            tip = base + r * (0.9 - 0.1 * abs(i - 1.5)) * np.array([np.cos(direction + spread / 3),
                                                                    np.sin(direction + spread / 3)])
            cv2.line(mask, tuple(np.round(base).astype(int)), tuple(np.round(tip).astype(int)), 1.0,
                     max(1, int(r * 0.22)), cv2.LINE_AA)
    return cv2.GaussianBlur(mask, (0, 0), 1.0) * p.opacity


def texture(p: OcclusionParams, size: int) -> np.ndarray:
    rng = np.random.default_rng(p.texture_seed)
    if p.kind == "cutout":  # a random square of a real photo, seeded: the same seed, the same pixels
        photo = _photo(CUTOUT_PHOTOS[p.texture_seed % len(CUTOUT_PHOTOS)])
        side = int(min(photo.shape[:2]) * rng.uniform(0.3, 0.6))
        y, x = (int(rng.integers(0, photo.shape[i] - side + 1)) for i in (0, 1))
        return cv2.resize(photo[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 3)
    shade = 1.0 + 0.15 * noise / (np.abs(noise).max() + 1e-6)
    return np.clip(np.array(p.colour, np.float32) * shade[..., None], 0, 255)


def apply(frames: np.ndarray, p: OcclusionParams) -> tuple[np.ndarray, np.ndarray]:
    """(occluded frames, per-frame occluder masks as uint8 {0..255})."""
    n, size = len(frames), frames.shape[1]
    tex = texture(p, size)
    out = np.empty_like(frames)
    masks = np.empty((n, size, size), np.uint8)
    for i, frame in enumerate(frames):
        a = occluder_mask(p, i / max(n - 1, 1), size)
        out[i] = np.clip(np.rint(frame * (1 - a[..., None]) + tex * a[..., None]), 0, 255).astype(np.uint8)
        masks[i] = np.rint(a * 255).astype(np.uint8)
    return out, masks
