"""One factory process per output folder (factory/out_lock.py), checked with real processes."""

import os
import signal
import subprocess
import sys

import pytest

from tests.cli import LOCAL, QUIET, run_factory_subprocess

HOLDER = """
import sys
from factory.out_lock import hold_output
with hold_output(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin or kills us
"""


def start_holder(out):
    """A process holding `out` the way a running factory does; returns once it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_on_the_same_out_exits_2_naming_the_holder(tmp_path):
    out, empty = tmp_path / "out", tmp_path / "no_videos"
    empty.mkdir()
    holder = start_holder(out)
    try:
        second = run_factory_subprocess(out, LOCAL, QUIET, videos=empty, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"in use by another factory process (PID {holder.pid})" in second.stderr
        assert not (out / "config.yaml").exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    out, empty = tmp_path / "out", tmp_path / "no_videos"
    empty.mkdir()
    holder = start_holder(out)
    os.kill(holder.pid, signal.SIGKILL)  # the kernel drops a dead process's flock
    holder.wait()
    assert (out / "state" / "run.lock").read_text().strip() == str(holder.pid)  # the stale file stays
    after = run_factory_subprocess(out, LOCAL, QUIET, videos=empty, timeout=120)
    assert after.returncode == 3, after.stderr[-2000:]  # past the lock: "no readable input"
    assert "in use" not in after.stderr


def test_refilter_waits_its_turn_too(tmp_path):
    from factory.cli import main

    (tmp_path / "state").mkdir()
    holder = start_holder(tmp_path)
    try:
        assert main(["refilter", str(tmp_path), "filters.mouth_distance.min_lmd=0"]) == 2
    finally:
        holder.kill()
        holder.wait()


def test_an_out_that_cannot_be_written_exits_2_with_a_clear_message(tmp_path, capsys):
    from factory.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["run", "configs/demo.yaml", f"out={blocker}/run", LOCAL, QUIET]) == 2
    assert f"out={blocker}/run is not a writable folder" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_exits_2(tmp_path, capsys):
    from factory.cli import main

    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(["run", "configs/demo.yaml", f"out={out}", LOCAL, QUIET]) == 2
        assert "is not a writable folder" in capsys.readouterr().err
    finally:
        out.chmod(0o755)


def test_ingest_into_out_waits_its_turn_too(tmp_path):
    from factory.cli import main

    holder = start_holder(tmp_path / "out")
    try:
        assert main(["ingest", "configs/demo.yaml", f"out={tmp_path / 'out'}", "input.demo=false",
                     f"input.paths=[{tmp_path}]", LOCAL, QUIET]) == 2
    finally:
        holder.kill()
        holder.wait()
