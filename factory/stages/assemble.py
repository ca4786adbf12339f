"""Turns tracked frames into aligned fixed-length clips: smoothing, alignment, crop, buffering.

Runs on its own thread during ingest (OpenCV's warp releases the GIL), so it overlaps with the
landmark model on the main thread. Landmarks are smoothed by a centred (zero-phase) Gaussian over
the track, so the crop neither jitters nor lags a moving head; a frame is cropped once the
Gaussian's look-ahead (`radius` frames) has arrived. Memory: `radius` source frames plus one clip
of crops, whatever the video's length.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import deque
from typing import Callable, NamedTuple

import numpy as np

from factory.priority import lower_this_threads_priority
from factory.faces.align import apply, frame_to_crop, outside_share, warp_crop


class ClipArrays(NamedTuple):
    crops: np.ndarray  # (T, S, S, 3) uint8
    landmarks: np.ndarray  # (T, 478, 2) float32, crop pixels
    transforms: np.ndarray  # (T, 2, 3) float32, frame -> crop
    outside: np.ndarray  # (T,) float32: share of each crop drawn from beyond the frame (black)
    # the clip's first frame comes right after the previous clip's last one, on one unbroken track
    follows_previous: bool = False


def smoothing_radius(sigma: float) -> int:
    return int(math.ceil(3 * sigma)) if sigma > 0 else 0


def gaussian_weights(sigma: float) -> np.ndarray:
    radius = smoothing_radius(sigma)
    if radius == 0:
        return np.ones(1)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return w / w.sum()


def smooth_at(window: np.ndarray, centre: int, sigma: float) -> np.ndarray:
    """The centred Gaussian average of window[centre] over its neighbours (axis 0).

    Where the window is short of `radius` neighbours it ends at the track's end: it is extended
    by odd reflection about the end sample (filtfilt's padding), which continues a steady motion
    in a straight line, so a face moving at constant speed is not dragged back at a clip's ends.
    """
    radius = smoothing_radius(sigma)
    if radius == 0:
        return window[centre]
    before, after = max(radius - centre, 0), max(radius - (len(window) - 1 - centre), 0)
    if before or after:
        pad = [(before, after)] + [(0, 0)] * (window.ndim - 1)
        window = np.pad(window, pad, mode="reflect", reflect_type="odd")
    start = centre + before - radius
    return np.tensordot(gaussian_weights(sigma), window[start:start + 2 * radius + 1], axes=1)


def smooth_track(points: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase smoothing of a whole (T, ...) track: what ClipAssembler does as frames stream."""
    radius = smoothing_radius(sigma)
    out = [smooth_at(points[max(0, i - radius):i + radius + 1], min(i, radius), sigma)
           for i in range(len(points))]
    return np.stack(out)


class ClipAssembler:
    def __init__(self, crop_size: int, clip_frames: int, clip_stride: int, smoothing_sigma: float,
                 on_clip: Callable[[int, ClipArrays], bool]):
        self.size, self.length, self.stride = crop_size, clip_frames, clip_stride
        self.sigma = smoothing_sigma
        self.radius = smoothing_radius(smoothing_sigma)
        self.on_clip = on_clip  # returns False to stop (enough clips)
        self.stopped = False
        self._reset()

    def _reset(self) -> None:
        self.crops: list[np.ndarray] = []
        self.landmarks: list[np.ndarray] = []
        self.transforms: list[np.ndarray] = []
        self.outside: list[float] = []
        self.start = 0
        self.follows_previous = False
        # The track's landmarks: the pending frames' and, as the Gaussian's look-back, the last
        # `radius` cropped frames'. Fewer than that before a frame means the track starts there.
        self.points: deque[np.ndarray] = deque()
        self.pending: deque[tuple[int, np.ndarray]] = deque()  # (k, rgb) awaiting look-ahead

    def break_track(self) -> None:
        """No usable face, a cut, or the end of the video: crop the frames held back for the
        look-ahead (the track's end is known now), then the next clip starts afresh."""
        while self.pending and not self.stopped:
            self._crop_oldest()
        self._reset()

    def add(self, k: int, rgb: np.ndarray, points: np.ndarray) -> None:
        if self.stopped:
            return
        self.points.append(np.asarray(points, np.float64))
        self.pending.append((k, rgb))
        if len(self.pending) > self.radius:
            self._crop_oldest()

    def _crop_oldest(self) -> None:
        k, rgb = self.pending.popleft()
        index = len(self.points) - len(self.pending) - 1  # the frame's place in self.points
        lo = max(0, index - self.radius)
        window = np.stack(list(self.points)[lo:index + self.radius + 1])
        smoothed = smooth_at(window, index - lo, self.sigma)
        raw = self.points[index]
        for _ in range(index + 1 - self.radius):  # the next frame looks back `radius` frames, no more
            self.points.popleft()
        self._append(k, rgb, raw, frame_to_crop(smoothed, self.size))

    def _append(self, k: int, rgb: np.ndarray, raw: np.ndarray, tf: np.ndarray) -> None:
        if not self.crops:
            self.start = k
        self.crops.append(warp_crop(rgb, tf, self.size))
        self.landmarks.append(apply(tf, raw).astype(np.float32))
        self.transforms.append(tf.astype(np.float32))
        self.outside.append(outside_share(tf, self.size, rgb.shape))
        if len(self.crops) == self.length:
            self._emit(k)

    def _emit(self, k: int) -> None:
        arrays = ClipArrays(np.stack(self.crops), np.stack(self.landmarks), np.stack(self.transforms),
                            np.asarray(self.outside, np.float32), self.follows_previous)
        if not self.on_clip(self.start, arrays):
            self.stopped = True
        keep = self.length - self.stride
        self.follows_previous = keep == 0
        if keep > 0:
            self.crops, self.landmarks = self.crops[-keep:], self.landmarks[-keep:]
            self.transforms, self.outside = self.transforms[-keep:], self.outside[-keep:]
            self.start = k + 1 - keep
        else:
            self.crops, self.landmarks, self.transforms, self.outside = [], [], [], []


class Background:
    """Calls `fn(*item)` for each item put, in order, on one thread; re-raises its error on close."""

    _DONE = object()

    def __init__(self, fn: Callable, maxsize: int = 8, background: bool = False):
        self.fn = fn
        self.background = background  # at low priority: feeding a faster thread that must not wait
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if self.background:
            lower_this_threads_priority()
        while (item := self.queue.get()) is not self._DONE:
            if self.error is None:
                try:
                    self.fn(*item)
                except BaseException as exc:  # handed to the caller in close()
                    self.error = exc

    def put(self, *item) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(item)

    def close(self) -> None:
        self.queue.put(self._DONE)
        self.thread.join()
        if self.error is not None:
            raise self.error
