"""Turns tracked frames into aligned fixed-length clips: smoothing, alignment, crop, buffering.

Runs on its own thread during ingest (OpenCV's warp releases the GIL), so it overlaps with the
landmark model on the main thread; memory is one clip of crops.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

import numpy as np

from factory.faces.align import apply, frame_to_crop, warp_crop

ClipArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # crops, landmarks, transforms


class ClipAssembler:
    def __init__(self, crop_size: int, clip_frames: int, clip_stride: int, smoothing: float,
                 on_clip: Callable[[int, ClipArrays], bool]):
        self.size, self.length, self.stride, self.smoothing = crop_size, clip_frames, clip_stride, smoothing
        self.on_clip = on_clip  # returns False to stop (enough clips)
        self.stopped = False
        self._reset()

    def _reset(self) -> None:
        self.crops: list[np.ndarray] = []
        self.landmarks: list[np.ndarray] = []
        self.transforms: list[np.ndarray] = []
        self.smoothed: np.ndarray | None = None
        self.start = 0

    def break_track(self) -> None:
        """No usable face, or a cut: the next clip starts afresh."""
        self._reset()

    def add(self, k: int, rgb: np.ndarray, points: np.ndarray) -> None:
        if self.stopped:
            return
        a = self.smoothing
        self.smoothed = points if self.smoothed is None else a * self.smoothed + (1 - a) * points
        tf = frame_to_crop(self.smoothed, self.size)
        if not self.crops:
            self.start = k
        self.crops.append(warp_crop(rgb, tf, self.size))
        self.landmarks.append(apply(tf, points).astype(np.float32))
        self.transforms.append(tf.astype(np.float32))
        if len(self.crops) == self.length:
            arrays = (np.stack(self.crops), np.stack(self.landmarks), np.stack(self.transforms))
            if not self.on_clip(self.start, arrays):
                self.stopped = True
            keep = self.length - self.stride
            if keep > 0:
                self.crops, self.landmarks, self.transforms = (
                    self.crops[-keep:], self.landmarks[-keep:], self.transforms[-keep:])
                self.start = k + 1 - keep
            else:
                self.crops, self.landmarks, self.transforms = [], [], []


class Background:
    """Calls `fn(*item)` for each item put, in order, on one thread; re-raises its error on close."""

    _DONE = object()

    def __init__(self, fn: Callable, maxsize: int = 8):
        self.fn = fn
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
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
