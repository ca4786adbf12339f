"""A local Ray cluster for the `ray job submit` tests, started and stopped as a user would, but
stopped by its own process ids only.

    with ray_head(num_cpus=2) as head:
        result = head.submit(["python", "-m", "factory.cli", ...], working_dir=ROOT, cwd=ROOT)
        assert result.returncode == 0 and "succeeded" in result.stdout

`ray start --head --block` runs in a new session, and stopping sends SIGTERM to that `ray start`
process (it drains and stops its children), then SIGKILL to whatever it started that is left (by
process id: its process group and its descendants). `ray stop --force` would kill every Ray
process of the user on the machine, another test's or another run's cluster too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict[str, str]:
    """The environment of `ray start` and `ray job submit`: the venv first on PATH (a job's
    `python` is the one the head's PATH finds), no RAY_ADDRESS of an outer cluster."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # Ray 2.60 enables token auth by default (ENVIRONMENT.md)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # as with an activated venv
    return env


@dataclass
class Head:
    dashboard: str  # http://127.0.0.1:PORT: the job API
    env: dict[str, str]
    log: Path  # `ray start`'s own output
    address: str = ""  # 127.0.0.1:PORT: the GCS, for `ray start --address` and executor.address

    def submit(self, entrypoint: list[str], working_dir: Path, cwd: Path, timeout: float = 600,
               ) -> subprocess.CompletedProcess:
        """`ray job submit --address DASHBOARD --working-dir WORKING_DIR -- ENTRYPOINT`: waits for
        the job and exits 0 only when it succeeded."""
        return subprocess.run([RAY, "job", "submit", f"--address={self.dashboard}", "--working-dir", str(working_dir),
                               "--", *entrypoint],
                              env=self.env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def dashboard_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@contextmanager
def ray_head(num_cpus: int = 2, start_timeout: float = 180, env: dict[str, str] | None = None) -> Iterator[Head]:
    """A head node; `env` is added to its environment (its workers inherit it: e.g. the AWS variables)."""
    env = {**ray_env(), **(env or {})}
    dash, gcs = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    log = Path(temp_dir) / "ray-start.log"
    with open(log, "w") as out:
        head = subprocess.Popen([RAY, "start", "--head", "--block", f"--port={gcs}", f"--num-cpus={num_cpus}",
                                 "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                                 f"--ray-client-server-port={free_port()}",  # not the fixed 10001
                                 f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + start_timeout
        while not dashboard_up(url):
            assert head.poll() is None, f"ray start exited {head.returncode}: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no dashboard at {url} after {start_timeout} s: {log.read_text()[-3000:]}"
            time.sleep(1)
        yield Head(url, env, log, f"127.0.0.1:{gcs}")
    finally:
        stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass
class Node:
    """A second node of the cluster on this machine, killable on its own."""
    process: subprocess.Popen
    log: Path
    node_id: str = ""

    def kill(self) -> None:
        """The node dies as a machine would: SIGKILL to its raylet, its workers and its `ray start`."""
        import psutil

        try:
            victims = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            victims = []
        for process in victims:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.wait()


def alive_nodes(head: Head) -> list[dict]:
    """The cluster's live nodes as the dashboard's state API lists them."""
    import json

    with urllib.request.urlopen(f"{head.dashboard}/api/v0/nodes?limit=100", timeout=5) as reply:
        nodes = json.load(reply)["data"]["result"]["result"]
    return [n for n in nodes if n.get("state") == "ALIVE"]


def actor_nodes(head: Head, class_name: str) -> set[str]:
    """The nodes that ran actors of a class (live or dead), from the state API."""
    import json

    url = f"{head.dashboard}/api/v0/actors?limit=1000&detail=1"
    with urllib.request.urlopen(url, timeout=10) as reply:
        actors = json.load(reply)["data"]["result"]["result"]
    return {a.get("node_id") or a.get("address", {}).get("node_id") for a in actors if a.get("class_name") == class_name}


@contextmanager
def ray_node(head: Head, num_cpus: int = 1, start_timeout: float = 180) -> Iterator[Node]:
    """`ray start --address HEAD` with a temp dir of its own, as a second machine would have."""
    temp_dir = tempfile.mkdtemp(prefix="rayw", dir="/tmp")
    log = Path(temp_dir) / "ray-start.log"
    deadline = time.monotonic() + start_timeout
    while not (before := {n["node_id"] for n in alive_nodes(head)}):  # the head itself is listed first
        assert time.monotonic() < deadline, "the head node never came up in the dashboard's node list"
        time.sleep(1)
    with open(log, "w") as out:
        process = subprocess.Popen([RAY, "start", "--block", f"--address={head.address}", f"--num-cpus={num_cpus}",
                                    f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                                   env=head.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    node = Node(process, log)
    try:
        while not (new := {n["node_id"] for n in alive_nodes(head)} - before):
            assert process.poll() is None, f"ray start exited {process.returncode}: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no second node after {start_timeout} s: {log.read_text()[-3000:]}"
            time.sleep(1)
        node.node_id = new.pop()
        yield node
    finally:
        stop(process)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop(head: subprocess.Popen) -> None:
    """SIGTERM to `ray start --block` (it drains and stops its processes), then SIGKILL to any of
    its descendants still alive: its process group (its id is the head's pid: start_new_session)
    holds GCS, raylet and dashboard, but Ray puts workers and job drivers in groups of their own."""
    import psutil

    try:
        descendants = psutil.Process(head.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if head.poll() is None:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is gone: every process in it stopped
    for process in descendants:  # psutil checks each is still the process it saw (no reused pid)
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    head.wait()
