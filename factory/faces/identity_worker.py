"""Face embeddings in a helper process, so ingest's tracking never waits for them.

dlib holds the GIL for the whole ~75 ms of an embedding: run on ingest's assembler thread, it
stalls landmark tracking and decoding in the same process (measured: a pure-Python loop ran 9x
slower beside it). A one-process pool runs dlib beside the tracker instead; ingest collects the
results when the video is done.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from factory.priority import HELPER_NICE

_embedder = None


def _die_with_parent(parent: int) -> None:
    """A helper whose parent is killed (kill -9, OOM) must go too: an orphan would hold the
    parent's stdout/stderr open (a caller waiting for them would wait forever) and its memory."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above ran
        os._exit(1)


def _load(parent: int) -> None:
    global _embedder
    from factory.faces.embedders import DlibEmbedder

    _die_with_parent(parent)
    os.nice(HELPER_NICE)  # embeddings are awaited only when the video is done: tracking goes first
    _embedder = DlibEmbedder()


def _embed(crops: np.ndarray) -> np.ndarray:
    return _embedder.embed(crops)


class IdentityWorker:
    def __init__(self) -> None:
        # spawn: a fork of a process running MediaPipe's and PyAV's threads is not safe
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_load,
                                        initargs=(os.getpid(),))
        # start the helper now, from this (long-lived) thread: the kernel's parent-death signal
        # follows the thread that spawned it, and ingest submits from a per-video thread
        self.pool.submit(int).result()

    def submit(self, crops: np.ndarray) -> Future:
        """Unit embeddings (N, 128) of N aligned face crops, later."""
        return self.pool.submit(_embed, np.ascontiguousarray(crops))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __del__(self) -> None:  # a stage used without an executor's teardown must not leave the process
        self.pool.shutdown(wait=False, cancel_futures=True)
