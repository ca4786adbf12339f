"""Streaming video decode with PyAV, resampled to a fixed frame rate by timestamps.

Frames come one at a time from a background thread (FFmpeg decoding releases the GIL), so
decoding overlaps with landmark detection and memory stays bounded whatever the video length.
A video on a URL (`s3://...`) is read through an fsspec file object, streamed in blocks: it is
never downloaded whole.
"""

from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

from factory import storage
from factory.priority import lower_this_threads_priority


class MediaError(Exception):
    """Input that cannot be used; `reason` is the short, stable rejection reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    duration: float
    has_audio: bool
    variable_frame_rate: bool


@contextmanager
def open_container(path: str | Path) -> Iterator[av.container.InputContainer]:
    """av.open for reading: a local path by name, a URL through a streamed fsspec file object."""
    if not storage.is_url(path):
        with av.open(str(path)) as container:
            yield container
        return
    with storage.open_file(path, "rb") as f, av.open(f) as container:
        yield container


def probe(path: str | Path) -> VideoInfo:
    path = storage.as_path(path)
    if not storage.exists(path):
        raise MediaError("missing_file", storage.redact(path))
    if storage.size(path) == 0:
        raise MediaError("empty_file")
    try:
        with open_container(path) as container:
            if not container.streams.video:
                raise MediaError("no_video_stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            duration = float(container.duration / av.time_base) if container.duration else 0.0
            vfr = bool(stream.average_rate and stream.base_rate and stream.average_rate != stream.base_rate)
            return VideoInfo(width, height, fps, duration, bool(container.streams.audio), vfr)
    except MediaError:
        raise
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError("unreadable_container", str(exc)[:200]) from exc


def first_frame_time(path: str | Path) -> float:
    """Presentation time (s) of the first video frame: the zero of both output timelines, so a
    stream that starts late (an MP4 without edit list, MPEG-TS, MKV) stays in sync."""
    with open_container(path) as container:
        for frame in container.decode(container.streams.video[0]):
            if frame.time is not None:
                return float(frame.time)
    return 0.0


def _decoded_frames(path: str, fps: int) -> Iterator[tuple[int, np.ndarray]]:
    """(output index, RGB frame) at exactly `fps`, nearest source frame by presentation time;
    output frame k is the source frame at (first frame's time + k / fps)."""
    step = 1.0 / fps
    k = 0
    prev, prev_t, prev_rgb = None, None, None
    zero = None
    with open_container(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            if zero is None:
                zero = frame.time
                check_supported_colours(frame)
            t = frame.time - zero
            if prev is not None:
                boundary = (prev_t + t) / 2
                while k * step < boundary:
                    if prev_rgb is None:
                        prev_rgb = _to_rgb(prev)
                    yield k, prev_rgb
                    k += 1
            prev, prev_t, prev_rgb = frame, t, None
        if prev is not None:
            src_step = 1.0 / float(stream.average_rate or fps)
            while k * step < prev_t + src_step / 2:
                if prev_rgb is None:
                    prev_rgb = _to_rgb(prev)
                yield k, prev_rgb
                k += 1


# AVColorTransferCharacteristic values of HDR transfers: an 8-bit RGB decode of them would be
# silently wrong (washed out, wrong gamut), so such videos are rejected instead.
_HDR_TRANSFERS = {16: "PQ (SMPTE 2084)", 18: "HLG (ARIB STD-B67)"}
# AVColorSpace -> the matrix swscale applies; anything else (unspecified, reserved) is guessed.
_MATRICES = {1: Colorspace.ITU709, 5: Colorspace.ITU601, 6: Colorspace.SMPTE170M, 7: Colorspace.SMPTE240M,
             4: Colorspace.FCC, 9: Colorspace.BT2020, 10: Colorspace.BT2020}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def check_supported_colours(frame: av.VideoFrame) -> None:
    if frame.color_trc in _HDR_TRANSFERS:
        raise MediaError("unsupported_hdr", f"{_HDR_TRANSFERS[frame.color_trc]} transfer, {frame.format.name}")


def colour_matrix(frame: av.VideoFrame) -> Colorspace:
    """The stream's YUV->RGB matrix; untagged: BT.709 from 720 lines up, else BT.601 (what
    FFmpeg's players assume)."""
    if frame.colorspace in _MATRICES:
        return _MATRICES[frame.colorspace]
    return Colorspace.ITU709 if frame.height >= 720 else Colorspace.ITU601


def is_full_range(frame: av.VideoFrame) -> bool:
    return frame.color_range == _FULL_RANGE or frame.format.name.startswith("yuvj")


def _interpolation(frame: av.VideoFrame) -> Interpolation:
    # swscale's fast path is ~2 levels dark on deep (10-bit) input; its exact path is not
    deep = frame.format.name.endswith(("10le", "10be", "12le", "12be", "16le", "16be"))
    exact = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
    return exact if deep else Interpolation.BILINEAR


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    if frame.format.name.startswith(("yuv", "nv")):
        # swscale with the stream's matrix and range; one thread is as fast as OpenCV's BT.601-only
        # I420 converter and faster than swscale's automatic threading for one frame at a time.
        rgb = frame.reformat(format="rgb24", src_colorspace=colour_matrix(frame), dst_colorspace=Colorspace.ITU709,
                             src_color_range=ColorRange.JPEG if is_full_range(frame) else ColorRange.MPEG,
                             dst_color_range=ColorRange.JPEG, threads=1, interpolation=_interpolation(frame)).to_ndarray()
    else:
        rgb = frame.to_ndarray(format="rgb24")
    rotation = getattr(frame, "rotation", 0) or 0  # display matrix, e.g. phone videos
    if rotation % 360:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=int(round(rotation / 90)) % 4))
    return rgb


frame_to_rgb = _to_rgb  # public name for other readers (encode.read_mp4)


def iter_frames(path: str | Path, fps: int = 25, prefetch: int = 16,
                prepare: Callable[[np.ndarray], Any] | None = None, background: bool = False) -> Iterator[tuple]:
    """(index, RGB frame) at `fps`, decoded in a background thread; decode errors surface as
    MediaError. With `prepare`, (index, frame, prepare(frame)), computed on the decode thread."""
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    done = object()

    def worker() -> None:
        if background:
            lower_this_threads_priority()
        try:
            for item in _decoded_frames(str(path), fps):
                if prepare is not None:
                    item = (*item, prepare(item[1]))
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except Exception as exc:  # handed to the consumer, never lost in the thread
            q.put(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, Exception):
                if isinstance(item, av.FFmpegError):
                    raise MediaError("decode_error", str(item)[:200]) from item
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # drain so the worker can exit
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
