"""One way for the tests to call `factory run` (in-process or as a child process), and the
override strings they share: when a config key is renamed, this is the file to change."""

from __future__ import annotations

import subprocess
import sys

CONFIG = "configs/demo.yaml"

LOCAL = "executor.kind=local"
QUIET = "executor.progress=false"
SHORT_CLIPS = ("ingest.clip_frames=25", "ingest.clip_stride=25")
SMALL = (*SHORT_CLIPS, QUIET)  # one-second clips, no progress bars: the end-to-end tests' usual run

# The session's shared finished run (conftest.finished_run): a small local run on talking_videos.
SHARDS_OF_3 = "write.shard_maxcount=3"
FINISHED_RUN = (*SMALL, LOCAL, SHARDS_OF_3)


def executor(kind: str) -> str:
    return f"executor.kind={kind}"


def inputs(folder) -> tuple[str, str]:
    """Read videos from `folder` instead of making the embedded demo's."""
    return "input.demo=false", f"input.paths=[{folder}]"


def run_args(out, *overrides: str, config: str = CONFIG, videos=None) -> list[str]:
    """`run CONFIG [input.demo=false input.paths=[videos]] [out=OUT] OVERRIDES...` for factory.cli.main."""
    args = ["run", config]
    if videos is not None:
        args += inputs(videos)
    if out is not None:
        args.append(f"out={out}")
    return [*args, *overrides]


def factory_command(*args: str) -> list[str]:
    """The command line of `factory ARGS` as a child process, in this interpreter."""
    return [sys.executable, "-m", "factory.cli", *args]


def run_factory(out, *overrides: str, config: str = CONFIG, videos=None) -> int:
    """`factory run` in this process; returns the exit code."""
    from factory.cli import main

    return main(run_args(out, *overrides, config=config, videos=videos))


def run_factory_subprocess(out, *overrides: str, config: str = CONFIG, videos=None, env=None,
                           timeout: float | None = None) -> subprocess.CompletedProcess:
    """`factory run ... -q` as a child process (for tests that kill it); output captured as text."""
    return subprocess.run(factory_command(*run_args(out, *overrides, config=config, videos=videos), "-q"),
                          env=env, capture_output=True, text=True, timeout=timeout)
