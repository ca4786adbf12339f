"""Face embeddings in a helper process, so ingest's tracking never waits for them.

dlib holds the GIL for the whole ~75 ms of an embedding: run on ingest's assembler thread, it
stalls landmark tracking and decoding in the same process (measured: a pure-Python loop ran 9x
slower beside it). A one-process pool runs dlib beside the tracker instead; ingest collects the
results when the video is done.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

_embedder = None


def _load() -> None:
    global _embedder
    from factory.faces.embedders import DlibEmbedder

    _embedder = DlibEmbedder()


def _embed(crops: np.ndarray) -> np.ndarray:
    return _embedder.embed(crops)


class IdentityWorker:
    def __init__(self) -> None:
        # spawn: a fork of a process running MediaPipe's and PyAV's threads is not safe
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_load)

    def submit(self, crops: np.ndarray) -> Future:
        """Unit embeddings (N, 128) of N aligned face crops, later."""
        return self.pool.submit(_embed, np.ascontiguousarray(crops))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __del__(self) -> None:  # a stage used without an executor's teardown must not leave the process
        self.pool.shutdown(wait=False, cancel_futures=True)
