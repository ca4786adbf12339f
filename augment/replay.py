"""Replay a recorded augmentation: the training reader's way to augment a pair.

The factory stores every pair clean; a sample's meta.json["augment"] (written by the augment
stage, absent when the pair was not drawn) holds everything needed to redraw the augmentation:
the kind, the clip's length and crop size, and seeded parameters (for relighting, the face's
oval and nose tip per frame, so no landmarks are needed). Replaying is pure and deterministic,
and draws the same pixels on both sides, so the pair stays frame-aligned.
"""

from __future__ import annotations

import numpy as np

from augment import occlusion, relight


def apply_augmentation(real: np.ndarray, syn: np.ndarray, augment: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(real, syn) (T, S, S, 3) uint8 with the recorded augmentation applied identically to both;
    new arrays, the inputs are not modified. `augment` is meta["augment"]; None or {} returns the
    inputs unchanged. Raises ValueError if the frames do not match what was recorded."""
    if not augment:
        return real, syn
    if real.shape != syn.shape:
        raise ValueError(f"real {real.shape} and syn {syn.shape} differ: not a pair")
    want = (augment["frames"], augment["size"], augment["size"], 3)
    if real.shape != want:
        raise ValueError(f"augmentation recorded for clips of shape {want}, got {real.shape}")
    if augment["kind"] == "relight":  # the gains once for both sides: they do not depend on the pixels
        g = relight.gains(relight.RelightParams.from_dict(augment["params"]), len(real), real.shape[1])
        return relight.apply_gains(real, g), relight.apply_gains(syn, g)
    return augment_frames(real, augment), augment_frames(syn, augment)


def augment_frames(frames: np.ndarray, augment: dict) -> np.ndarray:
    """One side: the same parameters give the same transform on either side."""
    if augment["kind"] == "occlusion":
        return occlusion.apply(frames, occlusion.OcclusionParams.from_dict(augment["params"]))[0]
    if augment["kind"] == "relight":
        return relight.apply(frames, relight.RelightParams.from_dict(augment["params"]))
    raise ValueError(f"unknown augmentation kind {augment['kind']!r}")


def occluder_masks(augment: dict) -> np.ndarray | None:
    """(T, S, S) uint8 0-255 coverage of a recorded occluder (None for other kinds): a trainer
    may weight its loss by it."""
    if augment.get("kind") != "occlusion":
        return None
    blank = np.zeros((augment["frames"], augment["size"], augment["size"], 3), np.uint8)
    return occlusion.apply(blank, occlusion.OcclusionParams.from_dict(augment["params"]))[1]
