"""The embedded demo input, made offline: a real face photo that speaks real synthetic speech.

Why: the factory must run end to end on a fresh machine with no downloads, yet its stages
(face tracking, alignment, mouth-distance filters, audio sync) only do real work on a real face
whose mouth moves with real speech. So the face is scikit-image's `astronaut` (a public-domain
photograph), the speech is espeak-ng's, and the jaw is warped open by the loudness of the speech
frame by frame, with a dark mouth interior painted where the lips part. MediaPipe sees the inner
lips move with the words. A gentle head sway and sensor noise give the tracker and the aligner
real work. Not a substitute for real footage, but real faces, real audio, real codecs.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf
from scipy.ndimage import gaussian_filter1d
from scipy.signal import resample_poly

from factory.faces.landmarks import LIPS_INNER, LOWER_FACE, FaceLandmarker
from factory.media.encode import add_aac_stream, mux_audio

SAMPLE_RATE = 16000
SPEED = 150  # espeak-ng words per minute
MAX_OPEN = 0.09  # widest jaw drop, as a fraction of the face height (forehead to chin)
CROP = 2.6  # side of the square frame, in face heights
SENTENCES = [  # two sentences each: 12-14 s of speech at SPEED
    "Every morning the baker opens the shop, and the smell of fresh bread fills the quiet street. "
    "People stop, smile, and buy a warm loaf on their way to work, while the radio plays old songs.",
    "The river was wide and slow, and the old wooden boat carried us past fields of yellow flowers. "
    "Nobody said a single word until the stone bridge appeared in the soft golden light of the evening.",
    "Please remember to water the plants, feed the cat, and lock the back door before you leave the house. "
    "I will be home very late on Thursday night, so please do not wait for me for dinner, and go to bed.",
    "Mountains look close in clear weather, but the walk always takes much longer than you think it will. "
    "Bring plenty of water, a paper map, a warm jacket, and a good pair of boots that you trust.",
    "Our team finally fixed the bug that had been crashing the server every Monday at noon. "
    "It turned out to be a tiny typo in a configuration file that nobody had opened for more than five years.",
    "When the storm passed, the children ran outside to jump in the puddles and chase the noisy gulls. "
    "Their grandmother watched from the porch, laughing and holding a cup of hot tea in both hands.",
]


def speak(text: str, voice: str = "en-us") -> np.ndarray:
    """espeak-ng speech as float32 mono at SAMPLE_RATE."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is needed for the demo input: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "speech.wav"
        done = subprocess.run(["espeak-ng", "-v", voice, "-s", str(SPEED), "-w", str(wav_path), text],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"espeak-ng failed (voice {voice!r}): {done.stderr.strip()[:200]}")
        wav, rate = sf.read(str(wav_path), dtype="float32", always_2d=True)
    return resample_poly(wav.mean(axis=1), SAMPLE_RATE, rate).astype(np.float32)


def fit_length(audio: np.ndarray, seconds: float) -> np.ndarray:
    """Pad with silence or trim to exactly `seconds`."""
    n = int(round(seconds * SAMPLE_RATE))
    return np.pad(audio, (0, max(0, n - len(audio))))[:n]


def loudness(audio: np.ndarray, frames: int, fps: int) -> np.ndarray:
    """Per video frame, the smoothed RMS of the audio in that frame's window, scaled to 0..1."""
    hop = SAMPLE_RATE // fps  # 640 samples = 40 ms at 25 fps
    windows = np.pad(audio, (0, max(0, frames * hop - len(audio))))[: frames * hop].reshape(frames, hop)
    rms = gaussian_filter1d(np.sqrt(np.mean(windows.astype(np.float32) ** 2, axis=1)), sigma=0.8)
    return np.clip(rms / (np.percentile(rms, 95) + 1e-9), 0, 1)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


class MouthRig:
    """Opens a face photo's mouth: the jaw and lower lip move down, the upper lip stays.

    Below the line where the lips meet, pixels move down by `opening * weight`. Between the mouth
    corners the weight steps up sharply at that line, with a lens-shaped profile (full at the
    centre, none at the corners), so the lips part; everywhere else it rises smoothly towards the
    chin, so the cheeks stretch instead of tearing. It fades out beyond the jaw and below the chin.
    The pixels the lips uncover are painted as a dark mouth interior.
    """

    def __init__(self, face: np.ndarray):
        with FaceLandmarker(static=True) as lm:
            faces = lm.detect(face)
        if not faces:
            raise ValueError("no face found in the demo face image")
        self.face, self.pts = face, faces[0][:, :2]
        self.face_height = float(np.linalg.norm(self.pts[152] - self.pts[10]))
        h, w = face.shape[:2]
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        below = gy - self._lip_line(gx[0])[None, :]  # signed distance below the lip line
        weight = self._weight(gx, gy, below)
        ys, xs = np.nonzero(weight > 1e-3)
        self.roi = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        self.gx, self.gy, self.below, self.weight = (a[self.roi] for a in (gx, gy, below, weight))

    def _lip_line(self, xs: np.ndarray) -> np.ndarray:
        """y of the line between the inner lips, per column; level beyond the mouth corners."""
        lower = self.pts[LIPS_INNER[:11]]  # corner 78 along the lower inner lip to corner 308
        upper = self.pts[LIPS_INNER[10:] + LIPS_INNER[:1]][::-1]  # 78 along the upper inner lip to 308
        return (np.interp(xs, *lower.T) + np.interp(xs, *upper.T)) / 2

    def _weight(self, gx: np.ndarray, gy: np.ndarray, below: np.ndarray) -> np.ndarray:
        left, right = self.pts[LIPS_INNER[0]], self.pts[LIPS_INNER[10]]
        centre_x, half_mouth = (left[0] + right[0]) / 2, abs(right[0] - left[0]) / 2
        lens = np.sqrt(np.clip(1 - ((gx - centre_x) / half_mouth) ** 2, 0, 1))
        parted = np.clip(below / 1.5 + 0.5, 0, 1)  # sharp step at the lip line
        chin_y = self.pts[152, 1]
        # Rise slower than the widest opening (slope < 1), so outside the lips nothing folds over.
        stretch = _smoothstep(below / max(0.6 * (chin_y - self.pts[14, 1]), 2 * MAX_OPEN * self.face_height))
        jaw = self.pts[LOWER_FACE]
        jaw_x, jaw_half = (jaw[:, 0].max() + jaw[:, 0].min()) / 2, np.ptp(jaw[:, 0]) / 2
        across = np.exp(-(((gx - jaw_x) / (1.05 * jaw_half)) ** 4))
        under_chin = 1 - _smoothstep((gy - chin_y) / (0.3 * self.face_height))
        return (across * under_chin * (lens * parted + (1 - lens) * stretch)).astype(np.float32)

    def render(self, opening: float) -> np.ndarray:
        shift = opening * self.weight
        roi = cv2.remap(self.face, self.gx, self.gy - shift, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        # Uncovered pixels: below the lip line by less than they moved. Soft 1-px edges.
        gap = np.clip(shift - self.below, 0, 1) * np.clip(self.below + 0.5, 0, 1)
        if gap.any():
            depth = np.clip(self.below / np.maximum(shift, 1e-3), 0, 1)[..., None] ** 2
            interior = (1 - depth) * np.float32([28, 8, 10]) + depth * np.float32([110, 42, 44])  # shadow to tongue
            gap = cv2.GaussianBlur(gap, (0, 0), 0.6)[..., None]
            roi = (roi * (1 - gap) + interior * gap).astype(np.uint8)
        frame = self.face.copy()
        frame[self.roi] = roi
        return frame
