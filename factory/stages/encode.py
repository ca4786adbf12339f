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


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


# paths into this run's folders and the clips' face embeddings: bulky, and not part of a sample
RUN_ONLY = ("clip_path", "alt_clip_path", "occlusion_masks", "motion_clip_path", "identity", "alt_identity")


def sample_meta(meta: dict) -> dict:
    """What a sample's meta.json carries: everything but paths into this run's work directory."""
    return {k: v for k, v in meta.items() if k not in RUN_ONLY}


class EncodeStage(Stage):
    name = "encode"
    requires = ("real_frames", "syn_frames", "real_audio", "alt_audio", "real_tracked", "syn_tracked",
                "transforms", "mask")
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
        m.files = {
            "real.mp4": mp4_bytes(m.real_frames, fps, self.crf),
            "syn.mp4": mp4_bytes(m.syn_frames, fps, self.crf),
            "real.wav": wav_bytes(m.real_audio, rate),
            "alt.wav": wav_bytes(m.alt_audio, rate),
            "real_landmarks.npy": npy_bytes(m.real_tracked.astype(np.float32)),
            "syn_landmarks.npy": npy_bytes(m.syn_tracked.astype(np.float32)),
            "transforms.npy": npy_bytes(m.transforms.astype(np.float32)),
            "mask.png": png_bytes(m.mask * 255),
            "meta.json": json.dumps({"key": record.key, **sample_meta(record.meta)}, sort_keys=True).encode(),
        }
        m.preview = preview_jpeg(m.real_frames, m.syn_frames)
        # only the encoded files travel back to the driver, not the arrays
        record.media = PairMedia(files=m.files, preview=m.preview)
        return record
