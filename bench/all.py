"""Every throughput bench, one after another, each in its own process (its own peak memory), and
one table of the results.

    .venv/bin/python bench/all.py [--only NAME ...] [--include run] [--markdown bench/results.md]

One demo run is made first (bench.common.demo_run) and shared by the benches that read pairs,
clips or shards from a run. Each bench ends with its JSON result (bench/common.py `emit`),
written to `--json PATH`; a bench that fails or overruns its time limit gets a row saying so and
the others still run. The table (bench, measure, throughput, unit, ratio, reference, peak RSS)
is printed and written as markdown with the machine it came from.

To add a bench: a script that takes `--json PATH` and calls `emit`, and a line in BENCHES.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Bench:
    name: str
    args: list[str]  # "{run}": the shared demo run; "{clips}": its clip store folder
    limit_s: int  # killed past this (the suite's budget is 15 minutes on 2 cores)
    default: bool = True  # False: only with --include NAME

    @property
    def script(self) -> Path:
        return ROOT / "bench" / f"{self.name}.py"


# Small sizes, so the whole list runs in under 15 minutes on 2 cores; each script's own defaults
# (and flags) are for bigger runs.
BENCHES = [
    Bench("ingest", ["--short", "6", "--seconds", "12"], 180),
    Bench("generate", ["--run", "{run}", "--pairs", "2", "--repeats", "1", "--steps", "3"], 300),
    Bench("filters", ["--run", "{run}", "--pairs", "3"], 240),
    Bench("shards", ["--run", "{run}", "--samples", "64"], 60),
    Bench("loader", ["--run", "{run}", "--epochs", "1", "--samples", "4"], 90),
    Bench("train", ["--run", "{run}", "--samples", "8", "--workers", "0"], 120),
    Bench("url_loader", ["--run", "{run}", "--samples", "8"], 150),
    Bench("object_commit", ["--samples", "32", "--repeats", "1"], 120),
    Bench("object_run", ["--videos", "2", "--seconds", "4"], 300, default=False),  # two whole runs
    Bench("syncnet", ["--run", "{run}", "--steps", "8", "--clips", "1", "--frames", "30"], 150),
    Bench("decode", ["--frames", "125", "--repeats", "2"], 60),
    Bench("storage", ["--clips", "{clips}", "--pairs", "3", "--repeats", "1"], 120),
    Bench("dub", ["--seconds", "4", "--size", "256", "--steps", "10", "--run", "{run}"], 180),
    Bench("run", ["--videos", "2"], 300, default=False),  # Ray vs in-process: minutes of Ray start-up
]
# Not throughput benches (not run here): bench/calibrate_identity.py, bench/calibrate_vlm.py
# (threshold calibrations) and bench/compositing_quality.py (image quality of the composite).


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_bench(bench: Bench, run: Path, tmp: Path) -> dict:
    """The bench's JSON result, plus its wall and CPU time; an error result if it failed or overran."""
    out = tmp / f"{bench.name}.json"
    args = [a.format(run=run, clips=run / "clips") for a in bench.args]
    cmd = [sys.executable, str(bench.script), *args, "--json", str(out)]
    start, cpu = time.perf_counter(), children_cpu_s()
    # A session of its own, so an overrun kills its children too (ingest's, the demo run's).
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=bench.limit_s)
        error = None if proc.returncode == 0 and out.exists() else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        error = f"over its {bench.limit_s} s limit"
    (tmp / f"{bench.name}.log").write_text(log or "")
    times = {"wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(children_cpu_s() - cpu, 1)}
    if error:
        tail = "\n".join((log or "").strip().splitlines()[-5:])
        print(f"{bench.name}: {error}\n{tail}", file=sys.stderr)
        return {"bench": bench.name, "rows": [], "error": error, **times}
    return json.loads(out.read_text()) | times


def format_table(results: list[dict]) -> str:
    """One markdown table row per measured line; a failed bench gets one row with its error."""
    lines = ["| bench | measure | throughput | unit | ratio | reference | peak RSS (MiB) | bench wall / CPU (s) |",
             "|---|---|---:|---|---:|---|---:|---:|"]
    for result in results:
        times = f"{result['wall_s']} / {result.get('cpu_s', '?')}"
        if result.get("error"):
            lines.append(f"| {result['bench']} | **failed: {result['error']}** | | | | | | {times} |")
        for r in result["rows"]:
            ratio = f"{r['ratio']:.3g}" if r.get("ratio") is not None else ""
            peak = r.get("peak_rss_mb", result.get("peak_rss_mb"))
            lines.append(f"| {result['bench']} | {r['name']} | {r['throughput']:.4g} | {r['unit']} | {ratio} | "
                         f"{r.get('reference', '')} | {peak:.0f} | {times} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return f"{os.cpu_count()} CPUs ({cpu}), {mem / 2**20:.0f} GiB RAM, {platform.system()} {platform.release()}"


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benches")
    parser.add_argument("--include", nargs="+", default=[], metavar="NAME", help="also run these (e.g. run)")
    parser.add_argument("--run", help="a finished run to share (default: a fresh demo run)")
    parser.add_argument("--markdown", default=str(ROOT / "bench" / "results.md"), help="where to write the table")
    args = parser.parse_args()
    names = {b.name for b in BENCHES}
    unknown = (set(args.only or []) | set(args.include)) - names
    if unknown:
        parser.error(f"unknown bench(es) {sorted(unknown)}; known: {sorted(names)}")
    chosen = [b for b in BENCHES if (b.name in args.only if args.only else b.default or b.name in args.include)]
    started, load_before, cpu = time.perf_counter(), load(), children_cpu_s()
    tmp = Path(tempfile.mkdtemp(prefix="bench-all-"))
    sys.path.insert(0, str(ROOT))
    from bench.common import demo_run

    run = Path(args.run) if args.run else demo_run(tmp / "demo")
    setup_s = round(time.perf_counter() - started, 1)
    print(f"shared demo run: {run} ({setup_s} s)", flush=True)
    results = []
    for bench in chosen:
        results.append(run_bench(bench, run, tmp))
        print(f"{bench.name}: {results[-1]['wall_s']} s", flush=True)
    total, total_cpu = round(time.perf_counter() - started, 1), round(children_cpu_s() - cpu, 1)
    table = format_table(results)
    header = (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {machine()}; load average (1, 5, 15 min) "
              f"{load_before} before, {load()} after; total {total} s wall, {total_cpu} s CPU (shared demo run "
              f"{setup_s} s wall); "
              f"logs in {tmp}")
    print(table)
    print(header)
    Path(args.markdown).write_text(f"{header}\n\n{table}\n")
    print(f"written to {args.markdown}")


if __name__ == "__main__":
    main()
