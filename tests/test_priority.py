"""Ingest's helper threads and its embedding process run below the landmark model's priority."""

import os
import sys
import threading

import pytest

from factory.priority import HELPER_NICE, lower_this_threads_priority

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def test_only_the_calling_thread_is_lowered():
    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def helper():
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        lower_this_threads_priority()
        seen.update(before=before, after=os.getpriority(os.PRIO_PROCESS, tid))

    thread = threading.Thread(target=helper)
    thread.start()
    thread.join()
    assert seen["after"] == min(19, seen["before"] + HELPER_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before


def test_the_embedding_process_runs_below_its_parent():
    from factory.faces.identity_worker import IdentityWorker

    worker = IdentityWorker()
    try:
        (pid,) = list(worker.pool._processes)
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + HELPER_NICE)
    finally:
        worker.close()
