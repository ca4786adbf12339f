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

from factory.files import atomic_path
from factory.faces.landmarks import INNER_LIP_GAP, LIPS_INNER, LOWER_FACE, FaceLandmarker
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
    The pixels the lips uncover are painted as a dark mouth interior. Assumes an upright face.
    """

    def __init__(self, face: np.ndarray):
        with FaceLandmarker(static=True) as lm:
            faces = lm.detect(face)
        if not faces:
            raise ValueError("no face found in the demo face image")
        self.face, self.pts = np.ascontiguousarray(face), faces[0][:, :2]
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
        upper = self.pts[LIPS_INNER[10:] + LIPS_INNER[:1]]  # 308 along the upper inner lip to 78
        return sum(np.interp(xs, *lip[np.argsort(lip[:, 0])].T) for lip in (lower, upper)) / 2

    def _weight(self, gx: np.ndarray, gy: np.ndarray, below: np.ndarray) -> np.ndarray:
        left, right = self.pts[LIPS_INNER[0]], self.pts[LIPS_INNER[10]]
        centre_x, half_mouth = (left[0] + right[0]) / 2, abs(right[0] - left[0]) / 2
        lens = np.sqrt(np.clip(1 - ((gx - centre_x) / half_mouth) ** 2, 0, 1))
        parted = np.clip(below / 1.5 + 0.5, 0, 1)  # sharp step at the lip line
        chin_y = self.pts[152, 1]
        # Rise over at least twice the widest opening: the shift grows slower than the distance
        # below the line (slope < 1), so outside the lips nothing folds over.
        rise = max(0.6 * (chin_y - self.pts[INNER_LIP_GAP[1], 1]), 2 * MAX_OPEN * self.face_height)
        stretch = _smoothstep(below / rise)
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
            depth = np.clip(self.below / np.maximum(shift, 1e-3), 0, 1)[..., None] ** 1.5
            interior = (1 - depth) * np.float32([28, 8, 10]) + depth * np.float32([140, 58, 58])  # shadow to tongue
            gap = cv2.GaussianBlur(gap, (0, 0), 0.6)[..., None]
            roi = (roi * (1 - gap) + interior * gap).astype(np.uint8)
        frame = self.face.copy()
        frame[self.roi] = roi
        return frame


@functools.lru_cache(maxsize=1)
def astronaut_rig() -> MouthRig:
    from skimage import data

    return MouthRig(data.astronaut())


def framing(rig: MouthRig) -> tuple[float, float, float]:
    """Square crop (x0, y0, side) of the photo: head and shoulders, face a little above centre."""
    h, w = rig.face.shape[:2]
    side = min(CROP * rig.face_height, w, h)
    cx, cy = rig.pts[:, 0].mean(), rig.pts[:, 1].mean() + 0.2 * rig.face_height
    return float(np.clip(cx - side / 2, 0, w - side)), float(np.clip(cy - side / 2, 0, h - side)), side


def camera(crop: tuple[float, float, float], size: int, t: float, motion: np.ndarray | None) -> np.ndarray:
    """2x3 map from the photo to the frame at time `t`: the crop, then a slow sway of the head
    (rotation ±3°, scale ±2%, shift ±6 px; `motion` holds each one's frequency and phase)."""
    x0, y0, side = crop
    k = size / side
    base = np.float64([[k, 0, -k * x0], [0, k, -k * y0], [0, 0, 1]])
    if motion is None:
        return base[:2]
    wave = np.sin(motion[0] * t + motion[1])
    sway = cv2.getRotationMatrix2D((size / 2, size / 2), 3.0 * wave[0], 1 + 0.02 * wave[1])
    sway[:, 2] += 6.0 * wave[2:]
    return sway @ base


def write_mp4(path: Path, frames, audio: np.ndarray, size: int, fps: int) -> None:
    """H.264 yuv420p video of the RGB `frames` plus AAC mono audio at SAMPLE_RATE."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size, size, "yuv420p"
        video.options = {"crf": "20", "preset": "veryfast"}
        sound = add_aac_stream(out, SAMPLE_RATE)
        for rgb in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        mux_audio(out, sound, (np.clip(audio, -1, 1) * 32767).astype(np.int16), SAMPLE_RATE)


def check_mp4(path: Path, frames: int) -> None:
    """Decode the whole file back: every frame and some sound must be there."""
    with av.open(str(path)) as c:
        if not (c.streams.video and c.streams.audio):
            raise RuntimeError(f"{path}: missing a video or audio stream")
        decoded = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        sound = sum(f.samples for f in c.decode(audio=0))
    if decoded != frames or sound == 0:
        raise RuntimeError(f"{path}: decoded {decoded}/{frames} frames and {sound} audio samples")


def make_talking_video(path: Path, text: str, *, seconds: float | None = None, size: int = 384, fps: int = 25,
                       seed: int = 0, voice: str = "en-us", face: np.ndarray | None = None,
                       sway: bool = True) -> Path:
    """An MP4 of `face` (RGB; default the astronaut photo) saying `text`, written atomically.
    Lasts as long as the speech, or `seconds` (silence-padded or trimmed)."""
    path = Path(path)
    audio = speak(text, voice)
    if seconds is not None:
        audio = fit_length(audio, seconds)
    count = len(audio) * fps // SAMPLE_RATE
    if count < 1:
        raise ValueError("the video would have no frames")
    rig = astronaut_rig() if face is None else MouthRig(face)
    openings = MAX_OPEN * rig.face_height * loudness(audio, count, fps)
    rng = np.random.default_rng(seed)
    motion = np.stack([rng.uniform(0.4, 1.0, 4), rng.uniform(0, 2 * np.pi, 4)]) if sway else None
    crop = framing(rig)

    def frames():
        for i, opening in enumerate(openings):
            m = camera(crop, size, i / fps, motion)
            rgb = cv2.warpAffine(rig.render(float(opening)), m, (size, size), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
            noise = rng.standard_normal(rgb.shape, dtype=np.float32) * 1.5  # sensor noise
            yield np.clip(rgb + noise, 0, 255).astype(np.uint8)

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".tmp.mp4") as tmp:  # PyAV picks the container from the extension
        write_mp4(tmp, frames(), audio, size, fps)
        check_mp4(tmp, count)
    return path


def make_demo_videos(out_dir: Path, count: int = 2, seed: int = 0) -> list[Path]:
    """The demo input: `count` videos, each of different sentences (they repeat past
    len(SENTENCES)) and its own head sway. Files already there are kept, not remade."""
    out_dir = Path(out_dir)
    paths = []
    for i in range(count):
        path = out_dir / f"demo_speaker_{i:02d}.mp4"
        if not path.exists():
            make_talking_video(path, SENTENCES[i % len(SENTENCES)], seed=seed + i)
        paths.append(path)
    return paths
