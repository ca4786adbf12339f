"""A small SyncNet corpus from the demo's talking face, written as a clip store in seconds.

The demo videos (factory/demo.py) open the astronaut's jaw by the loudness of real espeak-ng
speech. Ingest would track and align them with MediaPipe (minutes on 2 cores); here the aligned
crop is computed directly: the photo's own landmarks give the similarity to the template (the
same skull-fixed points ingest aligns on, so the crop matches ingest's up to tracking noise),
plus a little per-frame jitter and sensor noise as tracking and codecs leave.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from factory.clip_store import ClipStore
from factory.clips import Clip, save_clip
from factory.demo import MAX_OPEN, SENTENCES, astronaut_rig, loudness, speak
from factory.faces.align import antialias_sigma, frame_to_crop, transform_scale
from factory.records import Record

FPS, SR = 25, 16000


def demo_clip_store(root: Path, sentences: list[str] | None = None, crop: int = 128, clip_frames: int = 77,
                    seed: int = 0) -> ClipStore:
    rig = astronaut_rig()
    sentences = sentences or SENTENCES
    store = ClipStore.for_settings(root, {"syncnet_demo_corpus": {"crop": crop, "clip_frames": clip_frames,
                                                                  "seed": seed, "sentences": len(sentences)}})
    base = frame_to_crop(rig.pts, crop)
    sigma = antialias_sigma(transform_scale(base))
    rng = np.random.default_rng(seed)
    per_frame = SR // FPS
    for v, text in enumerate(sentences):
        video_key = f"demo{v:02d}"
        if store.is_done(video_key):
            continue
        audio = speak(text)
        count = len(audio) * FPS // SR
        openings = MAX_OPEN * rig.face_height * loudness(audio, count, FPS)
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        records = []
        for c, start in enumerate(range(0, count - clip_frames + 1, clip_frames)):
            frames = []
            for i in range(start, start + clip_frames):
                m = base.copy()
                m[:, 2] += rng.normal(0, 0.4, 2)  # tracking jitter, crop pixels
                m[:, :2] *= 1 + rng.normal(0, 0.004)
                face = cv2.GaussianBlur(rig.render(float(openings[i])), (0, 0), sigma) if sigma > 0.3 else rig.render(float(openings[i]))
                rgb = cv2.warpAffine(face, m, (crop, crop), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                frames.append(np.clip(rgb + rng.normal(0, 1.5, rgb.shape), 0, 255).astype(np.uint8))
            key = f"{video_key}_c{c:04d}"
            path = store.clip_dir / f"{key}.npz"
            clip_audio = pcm[start * per_frame:(start + clip_frames) * per_frame]
            save_clip(path, Clip(np.stack(frames), np.zeros((clip_frames, 478, 2), np.float32),
                                 np.repeat(base[None].astype(np.float32), clip_frames, 0), clip_audio))
            records.append(Record(key=key, kind="clip", meta={
                "video_key": video_key, "speaker": video_key, "frame_range": [start, start + clip_frames],
                "fps": FPS, "sample_rate": SR, "clip_path": str(path)}))
        store.record_video(video_key, records)
    return store


def demo_clip_store_with_landmarks(root: Path, sentences: list[str] | None = None, crop: int = 128) -> ClipStore:
    """demo_clip_store, with each frame's landmarks filled in from the photo's (mapped into the
    crop by its transform) for the trainers that build masks from them."""
    from factory.clips import load_clip
    from factory.faces.align import apply

    store = demo_clip_store(root, sentences=sentences, crop=crop)
    pts = astronaut_rig().pts
    for r in store.records():
        clip = load_clip(r.meta["clip_path"])
        clip.landmarks = np.stack([apply(m, pts) for m in clip.transforms]).astype(np.float32)
        save_clip(Path(r.meta["clip_path"]), clip)
    return store
