"""The embedded demo input, made offline: a real face photo that speaks real synthetic speech.

The face is scikit-image's `astronaut` (a public-domain photograph); the speech is espeak-ng's.
The jaw and lower lip are warped down by the loudness of the speech, frame by frame, and a dark
mouth opening is painted between the lips, so MediaPipe sees a mouth that moves with the words
(the pairs the factory makes must differ in the lips). A gentle head sway gives the tracker and
the aligner real work. Not a substitute for real footage, but real faces, real audio, real codecs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf
from scipy.ndimage import uniform_filter1d
from scipy.signal import resample_poly

from factory.faces.landmarks import INNER_LIP_GAP, FaceLandmarker
from factory.media.encode import add_aac_stream, mux_audio

SAMPLE_RATE = 16000
SENTENCES = [
    "Every morning the baker opens the shop and the smell of fresh bread fills the quiet street. "
    "People stop, smile, and buy a warm loaf on the way to work.",
    "The river was wide and slow, and the old boat carried us past fields of yellow flowers. "
    "Nobody spoke until the bridge appeared in the evening light.",
    "Please remember to water the plants, feed the cat, and lock the back door before you leave. "
    "I will be home late on Thursday night.",
    "Mountains look close in clear weather, but the walk takes much longer than you think. "
    "Bring water, a map, and a good pair of boots.",
]


def speak(text: str, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """espeak-ng speech as int16 mono at 16 kHz."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is needed for the demo input: apt-get install espeak-ng "
                           "(scripts/setup.sh does it)")
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav_path), text],
                       check=True, capture_output=True)
        wav, rate = sf.read(str(wav_path), dtype="float32")
    wav = resample_poly(wav, SAMPLE_RATE, rate)
    return (np.clip(wav, -1, 1) * 32767).astype(np.int16)


def default_face(size: int) -> np.ndarray:
    from skimage import data

    return cv2.resize(data.astronaut()[0:300, 100:400], (size, size), interpolation=cv2.INTER_AREA)


def mouth_openings(audio: np.ndarray, frames: int, fps: int, max_open: float) -> np.ndarray:
    """Jaw drop per frame (pixels) from the speech loudness in that frame's window."""
    hop = SAMPLE_RATE // fps
    padded = np.pad(audio.astype(np.float32) / 32768.0, (0, frames * hop))
    rms = np.sqrt(np.mean(padded[: frames * hop].reshape(frames, hop) ** 2, axis=1))
    loud = rms / (np.percentile(rms, 95) + 1e-6)
    loud = uniform_filter1d(np.clip(loud, 0, 1), size=2)
    return max_open * loud


class MouthAnimator:
    """Warps a face photo's jaw and lower lip down by a given number of pixels."""

    def __init__(self, face: np.ndarray):
        with FaceLandmarker(static=True) as lm:
            faces = lm.detect(face)
        if not faces:
            raise ValueError("no face found in the demo face image")
        pts = faces[0][:, :2]
        self.face = face
        self.mouth_y = float(pts[list(INNER_LIP_GAP), 1].mean())
        self.centre_x = float(pts[[61, 291], 0].mean())
        self.mouth_half_width = float(abs(pts[291, 0] - pts[61, 0]) / 2)
        self.chin_y = float(pts[152, 1])
        self.jaw_half_width = float(abs(pts[361, 0] - pts[132, 0]) / 2)
        self.face_height = float(pts[152, 1] - pts[10, 1])
        h, w = face.shape[:2]
        self.grid_x, self.grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        below = np.clip((self.grid_y - self.mouth_y + 2) / 5, 0, 1)
        fade = np.clip(1 - (self.grid_y - self.chin_y) / (0.35 * self.face_height), 0, 1)
        across = np.exp(-(((self.grid_x - self.centre_x) / (1.1 * self.jaw_half_width)) ** 4))
        self.weight = (below * fade * across).astype(np.float32)

    def render(self, opening: float) -> np.ndarray:
        map_y = self.grid_y - opening * self.weight
        frame = cv2.remap(self.face, self.grid_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        if opening > 0.5:  # the dark gap between the parted lips
            mask = np.zeros(frame.shape[:2], np.float32)
            centre = (int(round(self.centre_x)), int(round(self.mouth_y + opening / 2)))
            axes = (int(self.mouth_half_width * 0.75), max(1, int(opening / 2)))
            cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, -1)
            mask = cv2.GaussianBlur(mask, (0, 0), 1.5)[..., None]
            frame = (frame * (1 - mask) + np.array([70, 25, 30], np.float32) * mask).astype(np.uint8)
        return frame


def sway(frame: np.ndarray, t: float, phases: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    angle = 3.0 * np.sin(0.9 * t + phases[0])
    scale = 1.0 + 0.02 * np.sin(0.6 * t + phases[1])
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[:, 2] += [6.0 * np.sin(0.7 * t + phases[2]), 4.0 * np.sin(0.5 * t + phases[3])]
    return cv2.warpAffine(frame, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def make_talking_video(path: Path, text: str, *, seconds: float | None = None, size: int = 384, fps: int = 25,
                       seed: int = 0, voice: str = "en-us", face: np.ndarray | None = None) -> Path:
    """An H.264 + AAC MP4 of `face` saying `text` (espeak-ng), written atomically."""
    path = Path(path)
    audio = speak(text, voice)
    if seconds is not None:
        n = int(seconds * SAMPLE_RATE)
        audio = np.pad(audio, (0, max(0, n - len(audio))))[:n]
    frames = int(len(audio) * fps / SAMPLE_RATE)
    animator = MouthAnimator(face if face is not None else default_face(size))
    openings = mouth_openings(audio, frames, fps, max_open=0.09 * animator.face_height)
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 4)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size, size, "yuv420p"
        video.options = {"crf": "20", "preset": "veryfast"}
        sound = add_aac_stream(out, SAMPLE_RATE)
        for i, opening in enumerate(openings):
            frame = sway(animator.render(float(opening)), i / fps, phases)
            noisy = np.clip(frame + rng.normal(0, 1.5, frame.shape), 0, 255).astype(np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(noisy, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        mux_audio(out, sound, audio, SAMPLE_RATE)
    os.replace(tmp, path)
    return path


def make_demo_videos(out_dir: Path, count: int = 2, seed: int = 0) -> list[Path]:
    """The demo input: `count` videos of different sentences. Reuses files already made."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = out_dir / f"demo_speaker_{i:02d}.mp4"
        if not path.exists():
            make_talking_video(path, SENTENCES[i % len(SENTENCES)], seed=seed + i)
        paths.append(path)
    return paths
