"""The embedded Ray (factory/embedded_ray.py) with real Ray in real child processes: it listens on
loopback only, and neither its processes nor its session folders outlive the factory (normal exit,
Ctrl-C, or the next start after a `kill -9`)."""

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factory import embedded_ray
from tests.cli import CONFIG, QUIET, factory_command

DRIVER = """
import sys
import ray
from factory import cluster

assert cluster.connect(num_cpus=1)

@ray.remote
class Echo:
    def ping(self):
        return "pong"

echo = Echo.remote()  # a worker process too, with its own server
assert ray.get(echo.ping.remote()) == "pong"
print("up", flush=True)
sys.stdin.readline()  # until the test says so (or kills us)
cluster.disconnect(True)
"""


def start_driver() -> tuple[subprocess.Popen, Path]:
    """A process that starts the embedded Ray the factory's way; returns once Ray is up."""
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert driver.stdout.readline().strip() == "up"
    return driver, embedded_ray.ROOT / embedded_ray._owner_name(driver.pid)


def wait_until(condition, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def listening(pids: set[int]) -> list[tuple[int, ipaddress._BaseAddress, int]]:
    """(pid, address, port) of every TCP socket these processes listen on (/proc/net/tcp, tcp6)."""
    owner = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    owner[link[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in owner:  # 0A: LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            raw = b"".join(bytes.fromhex(hex_ip[i:i + 8])[::-1] for i in range(0, len(hex_ip), 8))
            found.append((owner[inode], ipaddress.ip_address(raw), int(hex_port, 16)))
    return found


def loopback(address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def test_every_port_is_on_loopback_and_nothing_outlives_a_normal_exit():
    driver, folder = start_driver()
    try:
        ray_pids = set(embedded_ray.processes_using(folder)) | {driver.pid}
        sockets = listening(ray_pids)
        assert len(sockets) >= 4  # GCS, raylet, agents, workers: the check sees them
        public = [(pid, str(ip), port) for pid, ip, port in sockets if not loopback(ip)]
        assert public == []
        driver.stdin.write("\n")
        driver.stdin.flush()
        assert driver.wait(timeout=120) == 0
        assert wait_until(lambda: embedded_ray.processes_using(folder) == [])
    finally:
        driver.kill()
        driver.wait()


def test_the_next_start_ends_a_killed_drivers_leftovers_and_prunes_old_sessions():
    embedded_ray.ROOT.mkdir(parents=True, exist_ok=True)
    old = [embedded_ray.ROOT / f"{999_000_000 + i}-1" for i in range(embedded_ray.KEEP + 2)]  # no such PIDs
    for i, folder in enumerate(old):
        (folder / "session_x" / "logs").mkdir(parents=True, exist_ok=True)
        os.utime(folder, (1_000_000 + i, 1_000_000 + i))  # older than any real session
    killed, folder = start_driver()
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    second, _ = start_driver()
    try:
        assert embedded_ray.processes_using(folder) == []  # the dead driver's agents are gone
        assert folder.is_dir()  # the newest dead session stays, for its logs
        assert not any(f.exists() for f in old[:3])  # the oldest go first
        dead = [f for f in embedded_ray.ROOT.iterdir() if not embedded_ray._driver_alive(f.name)]
        assert len(dead) <= embedded_ray.KEEP
    finally:
        second.kill()
        second.wait()


# SIGTERM inside ray.wait: Ray turns the handler's SystemExit(143) into SystemExit(1); either way the
# CLI unwinds through the executor's close()
@pytest.mark.parametrize("signum,codes", [(signal.SIGINT, {130}), (signal.SIGTERM, {143, 1})])
def test_ctrl_c_or_sigterm_during_a_ray_run_leaves_nothing_running(tmp_path, signum, codes):
    # a loaded machine can see the workers late and the run end before the signal lands (exit 0):
    # that attempt says nothing about the signal, so it is made again on a fresh out
    for attempt in range(3):
        code, log, folder = _signal_a_running_ray_run(tmp_path / f"try{attempt}", signum)
        if code != 0:
            break
    assert code in codes, log[-3000:]
    assert wait_until(lambda: embedded_ray.processes_using(folder) == [], timeout_s=180), \
        [Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in embedded_ray.processes_using(folder)]


def _signal_a_running_ray_run(tmp_path: Path, signum: int) -> tuple[int, str, Path]:
    tmp_path.mkdir()
    log = tmp_path / "stderr.txt"  # a file, not a pipe: a full pipe would stall the run
    # Ctrl-C reaches the run as from a terminal even when this test runs with SIGINT ignored (a
    # background job inherits SIG_IGN, and Python then never raises KeyboardInterrupt): the child
    # resets it before exec'ing the CLI (same pid)
    command = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
               "os.execv(sys.argv[1], sys.argv[1:])", *factory_command("run", CONFIG, f"out={tmp_path / 'out'}", QUIET, "-q")]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    folder = embedded_ray.ROOT / embedded_ray._owner_name(run.pid)
    try:
        def workers_up() -> bool:
            return run.poll() is None and any(
                Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::StageWorker")
                for pid in embedded_ray.processes_using(folder))
        # generous waits: on a loaded 2-core machine Ray's start and shutdown take minutes
        assert wait_until(workers_up, timeout_s=600), "the run never reached its Ray stages"
        run.send_signal(signum)
        return run.wait(timeout=300), log.read_text(), folder
    finally:
        run.kill()
        run.wait()


def test_one_process_starting_ray_again_and_again_keeps_few_sessions(tmp_path):
    sessions = [tmp_path / f"session_{i}" for i in range(6)]
    for i, session in enumerate(sessions):
        session.mkdir()
        os.utime(session, (1_000_000 + i, 1_000_000 + i))
    (tmp_path / "session_latest").symlink_to(sessions[-1])
    embedded_ray._prune_sessions(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        sorted([s.name for s in sessions[-(embedded_ray.KEEP - 1):]] + ["session_latest"])
