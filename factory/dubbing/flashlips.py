"""A `flashlips-refine` dubber folder (a lip_flow run's final/) as a `factory dub` dubber.

The folder's FlashLipsDubber (factory/trainers/flashlips_dubber.py) does the work: the lip-pose
flow model draws the segment's lip poses from the new audio and reference poses of the segment's
own frames, then the refined single-step editor redraws every frame toward them, mask-free. This
adapter gives it the protocol's per-segment seed (mixed with the folder's own, so segments get
their own noise and a rerun the same) and the alpha `factory dub` pastes with: the editor redraws
the whole crop, the lower face is what goes back (the generate stage's alpha on the input's
landmarks, dilated and feathered, the nose kept), so everything else stays the user's pixels.
It takes no motion frames (the FlashLips editor works frame by frame). The lip-pose model was
built for at most `max_frames` frames a sequence: a longer `factory dub` segment is drawn in equal
pieces under that length (each its own poses and references; a pose may jump where two meet).

The editor run's final/ (stage editor) is a latent_editor generator folder: `factory dub` runs it
through the mask-based adapter (masked.py), not this one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from factory.config import ConfigError
from factory.dubbing.dubbers import register_dubber
from factory.dubbing.protocol import DubbedSegment
from factory.stages.generate import GenerateConfig, lower_face_alpha

NAME = "flashlips-refine"


class FlashLipsAdapter:
    name = NAME
    fps, sample_rate = 25, 16000  # 640 samples per frame, as the lip-flow model was trained
    crop_size = 256  # ingest's crop, as the pairs were cut; the editor resizes to its resolution
    motion_frames = 0

    def __init__(self, folder: Path, compositing: GenerateConfig | None = None):
        self.folder, self.dubber = folder, None
        self.compositing = compositing or GenerateConfig()

    def setup(self, device: str) -> None:
        from factory.trainers.flashlips_dubber import FlashLipsDubber

        self.dubber = FlashLipsDubber.from_pretrained(self.folder, key="--checkpoint", device=device)

    def dub_segment(self, frames: np.ndarray, landmarks: np.ndarray, audio_16k: np.ndarray,
                    motion: np.ndarray | None, seed: int = 0) -> DubbedSegment:
        if self.dubber is None:
            self.setup("cpu")
        own, n = self.dubber.settings, len(frames)
        per_frame = self.sample_rate // self.fps
        pieces = np.array_split(np.arange(n), -(-n // self.dubber.flow.config.max_frames))
        rendered = []
        try:
            for i, piece in enumerate(pieces):
                a, b = int(piece[0]), int(piece[-1]) + 1
                mixed = (int(seed) + 1_000_003 * own.seed + 7_919 * i) % 2**63
                self.dubber.settings = dataclasses.replace(own, seed=mixed)
                rendered.append(self.dubber.dub_segment(frames[a:b], landmarks[a:b],
                                                        audio_16k[a * per_frame:b * per_frame]))
        finally:
            self.dubber.settings = own
        rendered = np.concatenate(rendered)
        alpha = lower_face_alpha(landmarks, landmarks, frames.shape[1], self.compositing.feather_sigma,
                                 self.compositing.mask_dilation)
        return DubbedSegment(rendered, alpha)


@register_dubber(NAME)
def load_flashlips(folder: Path | None, config: dict[str, Any]) -> FlashLipsAdapter:
    if folder is None:
        raise ConfigError(f"{NAME} is learned: give --checkpoint DIR (a `factory train-dubber` stage=lip_flow "
                          "run's loop.out/final)")
    if not config.get("dubber"):  # a flashlips-refine run's folder other than lip_flow's would say so
        raise ConfigError(f"--checkpoint {str(folder)!r} is not a {NAME} dubber folder: dub with a stage=lip_flow "
                          "run's final/ (a stage=editor run's final/ is a latent_editor generator)")
    return FlashLipsAdapter(folder)
