"""Encode: turn a kept pair's arrays into the files of its WebDataset sample (on the worker, so
the driver only moves bytes)."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np

from factory.media.audio import wav_bytes
from factory.media.encode import mp4_bytes
from factory.payload import PairMedia
from factory.previews import preview_jpeg
from factory.records import Record
from factory.stage import Resources, Stage
from factory.stages.track import clean_landmarks
from manifests.sample import SAMPLE_FORMAT, alpha_bytes, syn_box


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


# paths into this run's folders and the clips' face embeddings: bulky, and not part of a sample;
# `speech` travels as its own member (speech.npy)
RUN_ONLY = ("clip_path", "alt_clip_path", "occlusion_masks", "motion_clip_path", "identity", "alt_identity",
            "speech")
LOSSY = "yuv420p"  # what hardware decoders take (4:4:4 H.264 is software-only on most)


def sample_meta(meta: dict) -> dict:
    """What a sample's meta.json carries: everything but paths into this run's work directory."""
    return {k: v for k, v in meta.items() if k not in RUN_ONLY}


def pair_files(m: PairMedia, fps: int, rate: int, crf: int) -> tuple[dict[str, bytes], dict]:
    """The sample's members (format 2, see manifests.sample) and the meta it adds. The synthetic
    side is stored as its region inside the alpha's box only: the reader takes everything else
    from the decoded real frames, so the background is exact after decoding."""
    box = syn_box(m.alpha)
    x0, y0, x1, y1 = box
    real_lm, real_ok = clean_landmarks(m.real_tracked, m.clip_landmarks)
    syn_lm, syn_ok = clean_landmarks(m.syn_tracked, real_lm)  # lost everywhere: the real side's points
    motion = m.motion_frames if m.motion_frames is not None else m.real_frames[:0]
    files = {
        "real.mp4": mp4_bytes(m.real_frames, fps, crf, LOSSY),
        "syn_region.mp4": mp4_bytes(m.syn_frames[:, y0:y1, x0:x1], fps, crf, LOSSY),
        "alpha.npz": alpha_bytes(m.alpha),
        "real.wav": wav_bytes(m.real_audio, rate),  # what the real lips say
        "alt.wav": wav_bytes(m.alt_audio, rate),  # what the synthetic lips say
        "real_landmarks.npy": npy_bytes(real_lm),
        "syn_landmarks.npy": npy_bytes(syn_lm),
        "real_landmarks_valid.npy": npy_bytes(real_ok),
        "syn_landmarks_valid.npy": npy_bytes(syn_ok),
        "transforms.npy": npy_bytes(m.transforms.astype(np.float32)),
        "mask.png": png_bytes(m.mask * 255),
    }
    if len(motion):  # X-Dub's motion frames: the real crops just before the clip, when contiguous
        files["motion.mp4"] = mp4_bytes(motion, fps, crf, LOSSY)
    if m.speech is not None:
        files["speech.npy"] = npy_bytes(np.asarray(m.speech, bool))
    return files, {"storage": {"format": SAMPLE_FORMAT, "syn_box": box}, "motion_frames": len(motion)}


class EncodeStage(Stage):
    name = "encode"
    requires = ("real_frames", "syn_frames", "real_audio", "alt_audio", "real_tracked", "syn_tracked",
                "clip_landmarks", "transforms", "mask", "alpha")
    provides = ("files", "preview")

    def __init__(self, config_hash: str, crf: int = 18, resources: Resources | None = None):
        super().__init__(resources)
        self.config_hash, self.crf = config_hash, crf

    def process(self, records: list[Record]) -> list[Record]:
        return [self.encode(r) for r in records]

    def encode(self, record: Record) -> Record:
        m = record.media
        record.meta["config_hash"] = self.config_hash
        fps, rate = record.meta.get("fps", 25), record.meta.get("sample_rate", 16000)  # the clip's rates
        m.files, stored = pair_files(m, fps, rate, self.crf)
        record.meta.update(stored)
        m.files["meta.json"] = json.dumps({"key": record.key, **sample_meta(record.meta)}, sort_keys=True).encode()
        m.preview = preview_jpeg(m.real_frames, m.syn_frames)
        # only the encoded files travel back to the driver, not the arrays
        record.media = PairMedia(files=m.files, preview=m.preview)
        return record
