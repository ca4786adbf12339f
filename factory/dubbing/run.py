"""`factory dub`: the three passes, the timelines between them, and the checks that fail early.

What happens, and what a user gets (README "Dub a video: `factory dub`"):
- the output has the video's frames: the same count, frame rate and size; its audio is only the
  new audio, trimmed to the video's length or padded with silence (a dub follows the picture);
- the dubber works at its own rate (25 fps, 16 kHz): model frame k shows the video frame nearest
  k / 25 s, and each video frame is pasted with the model frame nearest its time (at 25 fps the
  two are the same frames);
- the face is dubbed in segments of `segment_frames` model frames along each unbroken face track,
  each segment bridged to the one before by its last dubbed frames (the dubber's motion frames);
- frames with no usable face (none found, a dark frame) and frames past the new audio's end
  (dubbed with silence: a closed mouth) are handled so nothing breaks: faceless frames are the
  original frames, re-encoded.

Failing early: a missing or wrong checkpoint is a ConfigError (exit 2) before anything is decoded;
unreadable or empty new audio and an unreadable video are BadInput (exit 3) before the models
load; a video in which no face is found is BadInput after tracking, before any dubbing.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from factory.config import ConfigError
from factory.devices import pick_device
from factory.faces.masks import composite
from factory.files import atomic_path
from factory.media.audio import decode_audio
from factory.media.video import MediaError, iter_frames, probe

from factory.dubbing.dubbers import checkpoint_config, load_dubber
from factory.dubbing.protocol import Dubber
from factory.dubbing.paste import paste_back
from factory.dubbing.track import FaceTrack, TrackSettings, track_faces
from factory.dubbing.writer import Mp4Writer

log = logging.getLogger("factory.dub")


class BadInput(RuntimeError):
    """The video or the audio cannot be dubbed (exit 3): the message says which and why."""


@dataclass
class DubSettings:
    segment_frames: int = 125  # model frames per dubber call (5 s at 25 fps)
    crf: int = 18  # H.264 quality of the output (lower: better, bigger)
    device: str | None = None  # default: cuda when present, else cpu
    seed: int = 0
    track: TrackSettings = field(default_factory=TrackSettings)


def read_new_audio(path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(16 kHz samples for the dubber, samples at the file's own rate for the output, that rate);
    both int16 mono. BadInput when the file is missing, empty, not audio, or holds no samples."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"cannot read the audio {str(path)!r}: no such file")
    if path.stat().st_size == 0:
        raise BadInput(f"cannot read the audio {str(path)!r}: the file is empty")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise BadInput(f"cannot read the audio {str(path)!r}: it has no audio stream")
            rate = container.streams.audio[0].codec_context.sample_rate or 16000
        model, output = decode_audio(path, 16000), decode_audio(path, rate)
    except (av.FFmpegError, MediaError, UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"cannot read the audio {str(path)!r}: {getattr(exc, 'reason', None) or exc}") from exc
    if len(model.samples) == 0:
        raise BadInput(f"cannot read the audio {str(path)!r}: it holds no samples")
    return model.samples, output.samples, rate


def frame_capacity(video: Path, duration: float, fps: Fraction) -> int:
    """Frames to make room for: the container's duration at `fps`, with two seconds to spare; a
    container that states no duration has its video packets counted instead (no decoding)."""
    if duration <= 0:
        with av.open(str(video)) as container:
            packets = sum(1 for p in container.demux(container.streams.video[0]) if p.size)
            stream = container.streams.video[0]
            duration = packets / float(stream.average_rate or fps)
    return int(np.ceil(duration * float(fps))) + 2 * int(np.ceil(float(fps))) + 1


def fit(samples: np.ndarray, n: int) -> np.ndarray:
    """Trimmed to n samples, or padded with silence."""
    out = np.zeros(n, np.int16)
    out[:min(n, len(samples))] = samples[:n]
    return out


def segments(track: np.ndarray, length: int) -> list[tuple[int, int, bool]]:
    """[start, end) runs of one face track id >= 0 in `track`, cut into pieces of `length`;
    the flag says the piece continues the previous one's track (motion frames apply)."""
    out, k, n = [], 0, len(track)
    while k < n:
        if track[k] < 0:
            k += 1
            continue
        end = k
        while end < n and track[end] == track[k]:
            end += 1
        out += [(a, min(a + length, end), a > k) for a in range(k, end, length)]
        k = end
    return out


def dub(video: str | Path, audio: str | Path, out: str | Path, checkpoint: str | Path | None = None,
        generator: str | None = None, settings: DubSettings | None = None, progress: bool = False) -> dict[str, Any]:
    """Write `out` (MP4): `video` with its face re-dubbed for `audio` by the dubber in `checkpoint`
    (or the weight-free `generator`). Returns what was done and how fast."""
    settings = settings or DubSettings()
    video, audio, out = Path(video), Path(audio), Path(out)
    if checkpoint is not None:
        checkpoint_config(checkpoint)  # a missing folder fails before anything is decoded
    if settings.segment_frames < 1:
        raise ConfigError(f"--segment-frames must be >= 1, not {settings.segment_frames}")
    if settings.track.crop_size is not None and settings.track.crop_size < 64:
        raise ConfigError(f"--crop-size must be >= 64 pixels, not {settings.track.crop_size}")
    if out.resolve() in (video.resolve(), audio.resolve()):
        raise ConfigError(f"-o {str(out)!r} would overwrite an input")
    if out.is_dir() or (out.parent.exists() and not out.parent.is_dir()):
        raise ConfigError(f"-o {str(out)!r} must be a file path (e.g. dubbed.mp4)")
    model_audio, out_audio, out_rate = read_new_audio(audio)
    try:
        info = probe(video)
    except MediaError as exc:
        raise BadInput(f"cannot read the video {str(video)!r}: {exc}") from exc
    dubber = load_dubber(checkpoint, generator)
    if settings.track.crop_size is None:
        settings = dataclasses.replace(settings, track=dataclasses.replace(settings.track, crop_size=dubber.crop_size))
    fps = Fraction(info.fps).limit_denominator(1001) if info.fps > 0 else Fraction(25)
    capacity = frame_capacity(video, info.duration, fps)
    try:  # the work folder sits beside the output: a place we cannot write is told now
        out.parent.mkdir(parents=True, exist_ok=True)
        workdir = tempfile.TemporaryDirectory(prefix=".dub-", dir=out.parent)
    except OSError as exc:
        raise ConfigError(f"-o {str(out)!r} cannot be written: {exc}") from exc
    with workdir as tmp:
        start = time.monotonic()
        try:
            faces = track_faces(video, float(fps), capacity, settings.track, Path(tmp), progress)
        except MediaError as exc:
            raise BadInput(f"cannot decode the video {str(video)!r}: {exc}") from exc
        if faces.faces == 0:
            raise BadInput(f"no face found in the video {str(video)!r} ({faces.count} frames read: "
                           f"{', '.join(f'{n} {why}' for why, n in faces.issues.most_common()) or 'none'})")
        tracked = time.monotonic()
        dubber.setup(settings.device or pick_device())
        model = _dub_faces(dubber, faces, model_audio, settings, Path(tmp), progress)
        dubbed = time.monotonic()
        seconds = faces.count / float(fps)
        sound = fit(out_audio, int(round(seconds * out_rate)))
        pasted = _write(video, out, faces, model, fps, sound, out_rate, settings, progress)
        done = time.monotonic()
    audio_seconds = len(out_audio) / out_rate
    if abs(audio_seconds - seconds) > 1 / float(fps):
        log.warning("the new audio lasts %.2f s, the video %.2f s: the audio was %s", audio_seconds, seconds,
                    "trimmed" if audio_seconds > seconds else "padded with silence (a closed mouth)")
    return {"output": str(out), "dubber": dubber.name, "frames": faces.count, "frames_dubbed": pasted,
            "fps": float(fps), "width": info.width, "height": info.height, "video_s": round(seconds, 3),
            "audio_s": round(audio_seconds, 3), "frames_not_dubbed": dict(faces.issues),
            "track_s": round(tracked - start, 2), "dub_s": round(dubbed - tracked, 2),
            "write_s": round(done - dubbed, 2), "frames_per_s": round(faces.count / max(done - start, 1e-9), 2)}


@dataclass
class ModelFrames:
    """The dubber's timeline: model frame k shows video frame source[k]."""
    rate: int  # the dubber's frames per second
    source: np.ndarray  # (K,) video frame index
    frames: np.ndarray  # (K, S, S, 3) dubbed crops as shown, memory-mapped
    alpha: np.ndarray  # (K, S, S) uint8, memory-mapped
    done: np.ndarray  # (K,) bool

    def of_video_frame(self, j: int, video_fps: float) -> int:
        return min(int(round(j * self.rate / video_fps)), len(self.source) - 1)


def _dub_faces(dubber: Dubber, faces: FaceTrack, audio: np.ndarray, settings: DubSettings, tmp: Path,
               progress: bool) -> ModelFrames:
    rate, per_frame = dubber.fps, dubber.sample_rate // dubber.fps
    k = max(1, int(round(faces.count * rate / faces.fps)))
    source = np.minimum(np.round(np.arange(k) * faces.fps / rate).astype(int), faces.count - 1)
    s = faces.crops.shape[1]
    model = ModelFrames(rate, source,
                        np.lib.format.open_memmap(tmp / "dubbed.npy", mode="w+", dtype=np.uint8, shape=(k, s, s, 3)),
                        np.lib.format.open_memmap(tmp / "alpha.npy", mode="w+", dtype=np.uint8, shape=(k, s, s)),
                        np.zeros(k, bool))
    audio = fit(audio, k * per_frame)
    pieces = segments(faces.track[source], settings.segment_frames)
    bar = tqdm(desc="dub", unit="frame", total=sum(b - a for a, b, _ in pieces), disable=not progress)
    for a, b, continues in pieces:
        frames = np.asarray(faces.crops[source[a:b]])
        motion = np.asarray(model.frames[max(a - dubber.motion_frames, 0):a]) if continues else None
        seg = dubber.dub_segment(frames, faces.landmarks[source[a:b]], audio[a * per_frame:b * per_frame],
                                 motion if motion is not None and len(motion) else None,
                                 seed=zlib.crc32(f"{settings.seed}:{a}".encode()))
        # what the viewer will see in the crop: the next segment's motion frames are these
        model.frames[a:b] = composite(frames, seg.frames, seg.alpha)
        model.alpha[a:b], model.done[a:b] = seg.alpha, True
        bar.update(b - a)
    bar.close()
    return model


def _write(video: Path, out: Path, faces: FaceTrack, model: ModelFrames, fps: Fraction, sound: np.ndarray,
           rate: int, settings: DubSettings, progress: bool) -> int:
    """Pass 3: decode again, paste each video frame's dubbed face, encode; returns frames pasted."""
    pasted = 0
    with atomic_path(out, suffix=".tmp.mp4") as tmp:
        writer = None
        try:
            for j, rgb in tqdm(iter_frames(video, float(fps)), desc="write", unit="frame", total=faces.count,
                               disable=not progress):
                if writer is None:  # the decoded size (a rotated phone video: upright)
                    writer = Mp4Writer(tmp, rgb.shape[1], rgb.shape[0], fps, rate, settings.crf)
                m = model.of_video_frame(j, faces.fps) if j < len(faces.track) else -1
                if m >= 0 and faces.track[j] >= 0 and model.done[m]:
                    rgb = paste_back(rgb, model.frames[m], model.alpha[m], faces.transforms[j])
                    pasted += 1
                writer.add(rgb)
            writer.finish(sound)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    return pasted
