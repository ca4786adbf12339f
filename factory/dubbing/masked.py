"""Any mask-based generator as a dubber: the generate stage's render and compositing, per segment.

The segment's real crops are the "real clip"; the new audio is the alternative audio the lips must
follow; driving frames picked by loudness (driving.py) stand in for the alternative clip's frames
for generators that copy a mouth (transplant, latent_editor). The mask and alpha are the generate
stage's (factory/stages/generate.py: both lower faces on every frame, jaw clamped, nose kept real,
Gaussian feather); `factory dub` composites with it, so pixels outside it are the input's, bit for bit.
"""

from __future__ import annotations

import numpy as np

from factory.faces.registration import move_points, register
from factory.generators import GenerationInput, Generator
from factory.metrics.frames import evenly_spaced
from factory.stages.generate import GenerateConfig, lower_face_alpha

from factory.dubbing.driving import driving_frames
from factory.dubbing.protocol import DubbedSegment


class MaskedGeneratorDubber:
    fps, sample_rate = 25, 16000  # the generators' clip timeline (ingest's defaults)
    crop_size = 256  # ingest's crop: the learned generators resize it to their own resolution

    def __init__(self, generator: Generator, compositing: GenerateConfig | None = None):
        self.generator = generator
        self.name = generator.name
        self.motion_frames = generator.motion_frames
        self.compositing = compositing or GenerateConfig()  # feather and dilation: the generate stage's defaults

    def setup(self, device: str) -> None:
        self.generator.setup(device)

    def dub_segment(self, frames: np.ndarray, landmarks: np.ndarray, audio_16k: np.ndarray,
                    motion: np.ndarray | None, seed: int = 0) -> DubbedSegment:
        n, size = len(frames), frames.shape[1]
        drive = driving_frames(landmarks, audio_16k)
        alt_frames, alt_landmarks = frames[drive], landmarks[drive]
        registration = register(alt_frames, frames, landmarks)  # as the stage does: nose on nose
        alpha = lower_face_alpha(landmarks, move_points(alt_landmarks, registration), size,
                                 self.compositing.feather_sigma, self.compositing.mask_dilation)
        mask = (alpha > 0).any(axis=0).astype(np.uint8)
        refs, m = self.generator.reference_frames, self.generator.motion_frames
        inp = GenerationInput(
            key=f"dub-{seed}", real_frames=frames, real_landmarks=landmarks, real_audio=audio_16k,
            alt_frames=alt_frames, alt_landmarks=alt_landmarks, alt_audio=audio_16k,
            masks=np.broadcast_to(mask, (n, size, size)), alt_registration=registration,
            reference_frames=frames[evenly_spaced(n, refs)] if refs else None,
            motion_frames=motion[-m:] if motion is not None and m and len(motion) >= m else None,
            fps=self.fps, sample_rate=self.sample_rate, seed=seed)
        rendered = self.generator.generate_batch([inp])[0]
        return DubbedSegment(rendered[:n], alpha)
