"""A small pair manifest for the dubber trainers, made in about a minute without MediaPipe.

The demo clip store (tests/syncnet_corpus.py: the astronaut's jaw opened by the loudness of
espeak-ng speech) with landmarks that move as the face does: each photo landmark below the lip
line is pushed down by the rig's own displacement at that point for the frame's opening, then
mapped into the crop by the frame's transform. So the mouth landmarks open and close with the
speech, as ingest's tracked ones would, and each clip records its `mouth_open` series like
ingest does. `factory pairs` (transplant generator, model-free filters only) then makes the pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factory.clips import load_clip, save_clip
from factory.demo import MAX_OPEN, astronaut_rig, loudness, speak
from factory.faces.align import apply
from factory.faces.landmarks import INNER_LIP_GAP
from tests.syncnet_corpus import FPS, SR, demo_clip_store


def moved_points(rig, opening: float) -> np.ndarray:
    """The photo's landmarks with the rig's displacement for `opening` applied (pixels of the photo)."""
    pts = rig.pts.astype(np.float32).copy()
    ys, xs = rig.roi
    iy = np.round(pts[:, 1]).astype(int) - ys.start
    ix = np.round(pts[:, 0]).astype(int) - xs.start
    inside = (iy >= 0) & (iy < rig.weight.shape[0]) & (ix >= 0) & (ix < rig.weight.shape[1])
    shift = np.zeros(len(pts), np.float32)
    shift[inside] = opening * rig.weight[iy[inside], ix[inside]]
    pts[:, 1] += shift
    return pts


def moving_landmark_store(root: Path, sentences: list[str], crop: int = 96):
    store = demo_clip_store(root, sentences=sentences, crop=crop)
    rig = astronaut_rig()
    for v, text in enumerate(sentences):
        video_key = f"demo{v:02d}"
        audio = speak(text)  # the same speech demo_clip_store rendered, so the same openings
        count = len(audio) * FPS // SR
        openings = MAX_OPEN * rig.face_height * loudness(audio, count, FPS)
        records = store.video_records(video_key)
        for r in records:
            if "clip_path" not in r.meta:
                continue
            lo, hi = r.meta["frame_range"]
            clip = load_clip(r.meta["clip_path"])
            clip.landmarks = np.stack([apply(m, moved_points(rig, float(openings[lo + i])))
                                       for i, m in enumerate(clip.transforms)]).astype(np.float32)
            save_clip(Path(r.meta["clip_path"]), clip)
            gap = clip.landmarks[:, INNER_LIP_GAP[1]] - clip.landmarks[:, INNER_LIP_GAP[0]]
            r.meta["mouth_open"] = np.round(np.linalg.norm(gap, axis=1), 2).tolist()
            r.meta.setdefault("speech", [1] * (hi - lo))
        store.record_video(video_key, records)
    return store


def pair_manifest(root: Path, sentences: list[str], crop: int = 96, *overrides: str) -> Path:
    """`factory pairs` over the moving-landmark store: the run folder (manifest.json inside)."""
    from factory.cli import main

    store = moving_landmark_store(root / "store", sentences, crop)
    out = root / "pairs"
    code = main(["pairs", "configs/demo.yaml", "executor.kind=local", "executor.progress=false", "input.demo=false",
                 "write.previews=0", f"clip_stores=[{store.path}]", f"out={out}", *overrides])
    assert code == 0, f"factory pairs exited {code}"
    return out
