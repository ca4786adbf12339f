"""Lower-face masks from landmarks, the compositing alpha, and compositing.

The alpha is built so that the two things a pair must never show are ruled out by construction:
the real jaw showing through V_syn (alpha is ~1 on every lower face of both clips, the jaw at its
widest included), and a seam across the nose (alpha is ~0 on the real nose tip and alae).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# The re-rendered region of one frame, as a polygon: the jaw line from ear to ear, then back along
# the upper lip's outer edge and the cheeks beside the mouth. Its top runs *under* the nose (not
# through the nose base, as a hull of the lower-face points would), so the feather stays off the nose.
JAW_LINE = [132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361]
UNDER_NOSE = [436, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185, 61, 216]
LOWER_FACE_OUTLINE = JAW_LINE + UNDER_NOSE
# Kept real: the nose tip and the alae (the nostril wings).
NOSE_TIP_AND_ALAE = [1, 4, 98, 327, 129, 358, 64, 294, 48, 278, 219, 439]


def _fill(landmark_sets: list[np.ndarray], points: list[int], size: int, convex: bool) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    for track in landmark_sets:
        track = np.asarray(track)[..., :2]
        for frame in track.reshape(-1, track.shape[-2], 2):
            poly = np.round(frame[points]).astype(np.int32)
            if convex:
                cv2.fillConvexPoly(mask, cv2.convexHull(poly), 1)
            else:
                cv2.fillPoly(mask, [poly], 1)
    return mask


def lower_face_mask(landmark_sets: list[np.ndarray], size: int) -> np.ndarray:
    """One static (H, W) uint8 {0, 1} mask: the union of the lower face of every frame given.

    `landmark_sets` are (T, 478, 2) arrays in crop coordinates (the real clip and the clip whose
    mouth replaces it). The union over *all* frames clamps the jaw at its widest opening, so the
    mask's shape never traces the lips of any one frame: it leaks no lip shape, and it stays still.
    """
    return _fill(landmark_sets, LOWER_FACE_OUTLINE, size, convex=False)


def nose_masks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W) uint8 {0, 1}: the nose tip and alae of each frame (kept real). Per frame, not a
    union: the mesh lets the nose base sag a few pixels when the mouth opens, and a union over the
    clip would reach down onto the upper lip."""
    return np.stack([_fill([frame[None]], NOSE_TIP_AND_ALAE, size, convex=True) for frame in landmarks])


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(mask.dtype)  # OpenCV 5.0 rejects bool


def feathered_alpha(mask: np.ndarray, sigma: float, dilation: int) -> np.ndarray:
    """Float alpha in [0, 1]: the mask blurred by a Gaussian, and exactly 0 outside its dilation.

    Multiplying by the dilated mask cuts the Gaussian's infinite tail, which is what guarantees
    that pixels outside the dilated mask are the original ones, bit for bit. Note the blur halves
    alpha on the mask's own edge: to cover a region fully, pass it already dilated (compositing_alpha).
    """
    support = dilate(mask, dilation).astype(np.float32)
    if sigma <= 0:
        return mask.astype(np.float32)
    blurred = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma)
    return np.clip(blurred * support, 0.0, 1.0)


def compositing_alpha(face: np.ndarray, keep_real: np.ndarray, sigma: float, dilation: int) -> np.ndarray:
    """uint8 alpha (255 = rendered), one (H, W) per `keep_real` frame (T, H, W): >= 0.98 on `face`,
    <= 0.03 on `keep_real` (the nose).

    `face` is grown by `dilation` *before* the blur, so the feather's half-way line lies outside
    the face, not on its edge (dilation >= 2.1 sigma gives >= 0.98 on the face); the blur is cut
    3 sigma out, where it is below half a level anyway, so alpha > 0 is exactly the support.
    The nose sits only a few pixels above the upper lip, closer than one feather is wide, so it is
    cut out with a feather half as wide (grown by 2 of its sigmas: <= 0.03 on the nose itself).
    """
    face_alpha = feathered_alpha(dilate(face.astype(np.uint8), dilation), sigma, math.ceil(3 * sigma))
    nose_sigma, grow = sigma / 2, math.ceil(sigma)
    out = []
    for nose in np.asarray(keep_real, np.uint8).reshape(-1, *face.shape):
        nose = dilate(nose, grow).astype(np.float32)
        if nose_sigma > 0:
            nose = cv2.GaussianBlur(nose, (0, 0), sigmaX=nose_sigma, sigmaY=nose_sigma)
        out.append(np.rint(face_alpha * (1.0 - nose) * 255).astype(np.uint8))
    return np.stack(out).reshape(np.shape(keep_real))


def composite(background: np.ndarray, foreground: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend (..., H, W, 3) uint8 frames; where alpha == 0 the background is returned unchanged.

    A uint8 `alpha` (0-255, what the stage stores) blends in integers: (bg*(255-a) + fg*a + 127) // 255,
    exact and platform independent, so anyone holding V_real, the render and the stored alpha
    recomputes V_syn bit for bit. A float alpha in [0, 1] blends in float32.
    """
    if alpha.dtype == np.uint8:
        a = alpha[..., None].astype(np.uint32)
        out = background.astype(np.uint32) * (255 - a) + foreground.astype(np.uint32) * a
        return ((out + 127) // 255).astype(np.uint8)
    a = alpha[..., None]
    out = background.astype(np.float32) * (1.0 - a) + foreground.astype(np.float32) * a
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    keep = np.broadcast_to(alpha == 0, out.shape[:-1])
    out[keep] = np.broadcast_to(background, out.shape)[keep]
    return out
