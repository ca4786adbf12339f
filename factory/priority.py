"""Helper threads yield the CPU to the critical path.

Ingest's landmark model is its bottleneck: each frame waits for it, never for the decoder, the
cropper or the embedder, which work through queues. With more runnable threads than cores, Linux
shares the cores evenly, so those helpers slow the model down. At a higher nice value they get
only the time it leaves. Linux applies nice per thread, and threads a helper starts (FFmpeg's
decoder threads) inherit it.
"""

from __future__ import annotations

import os
import sys
import threading

HELPER_NICE = 10  # added to the caller's nice: at +10 a thread gets ~1/10 of a contested core


def lower_this_threads_priority(by: int = HELPER_NICE) -> None:
    """Make the calling thread (Linux) a background one. Elsewhere, or if refused, nothing: only
    speed is at stake."""
    if not sys.platform.startswith("linux"):  # PRIO_PROCESS takes a thread id only on Linux
        return
    try:
        tid = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + by))
    except OSError:
        pass
