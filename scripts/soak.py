"""Soak: many consecutive `factory run`s into ONE output folder, abused between them.

    .venv/bin/python scripts/soak.py [--runs 20] [--seed 0] [--work DIR] [--log FILE]

Before each run, at random (seeded): a config change (one that only changes how the run runs,
which must resume the output, or one that shapes samples, which must be refused with exit 2
leaving the output untouched, after which the run goes on with the last allowed config), damage
(a committed shard truncated, bit-flipped or deleted, the manifest or the clip store deleted, a
stray `.partial`, a torn ledger line), and a `kill -9` (of the whole process group after a random
delay, or of the driver at a fault point), after which the same command is run again to the end.

After every completed run: `factory verify OUT` exits 0; the manifest agrees with its shards
(each listed shard exists with its size and md5, its sample count is the tar's, no key twice,
stats and table agree), with the shard log, and with the run's config; and its samples (every
fate, every member's bytes) equal those of a clean run of the same settings in a fresh folder.
One line per run, a summary, a JSON log; the exit status is 1 if anything was inconsistent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from factory.config import digest  # noqa: E402
from factory.files import file_digest  # noqa: E402
from manifests.format import read_manifest  # noqa: E402
from manifests.table import read_table  # noqa: E402
from manifests.writer import read_shard_log  # noqa: E402
from pipelines.settings import ingest_identity, load_factory_config, pairs_identity  # noqa: E402

CONFIG = "configs/demo.yaml"
# one-second clips, shards of 3, in-process: the tests' small run (tests/cli.py FINISHED_RUN)
BASE = ("ingest.clip_frames=25", "ingest.clip_stride=25", "executor.progress=false", "executor.kind=local",
        "write.shard_maxcount=3")

# (key, values): keys that only change how a run runs (an output resumes under them) ...
RUNNING_CHANGES = [("executor.kind", ["ray", "local", "local"]), ("write.previews", [0, 4, 16]),
                   ("generate.resources.pool_size", [1, 2]), ("write.resources.batch_size", [1, 2]),
                   ("executor.max_retries", [1, 3])]
# ... and keys that shape the samples: an output made with others must refuse them (exit 2)
SHAPING_CHANGES = [("ingest.clip_stride", [50]), ("filters.mouth_distance.min_lmd", [1.5]),
                   ("write.shard_maxcount", [2, 5]), ("generate.settings.colour_match", ["false"]),
                   ("augment.share", [0.5]), ("seed", [1]), ("write.keep_rejected", ["false"])]
DAMAGES = ["truncate_shard", "flip_shard", "delete_shard", "delete_manifest", "stray_partial",
           "torn_ledger", "torn_shard_log", "unended_log_lines", "delete_clip_store"]
FAULT_KILLS = ["ingest_clip", "ingest_done", "generate", "pair_written", "shard_renamed", "shard_committed",
               "rejection_recorded", "manifest"]


@dataclass
class Step:
    """What happens before and during one soak run."""
    change: tuple[str, Any] | None = None  # key, value
    damage: list[str] = field(default_factory=list)
    kill: str | None = None  # "after:SECONDS" (SIGKILL the process group) or "fault:POINT@HIT"
    damage_after_kill: list[str] = field(default_factory=list)


def plan(rng: random.Random, runs: int, full_run_s: float = 40.0) -> list[Step]:
    """Random steps; the first run is a kill candidate too (it has the most work)."""
    steps = []
    for i in range(runs):
        step = Step()
        if i > 0 and rng.random() < 0.5:
            key, values = rng.choice(RUNNING_CHANGES if rng.random() < 0.6 else SHAPING_CHANGES)
            step.change = (key, rng.choice(values))
        if i > 0 and rng.random() < 0.6:
            step.damage = rng.sample(DAMAGES, rng.choice([1, 1, 2]))
        if not i or rng.random() < 0.5:
            if rng.random() < 0.5:
                # a resumed run mostly has only repairs to do: short delays, so kills land in them
                step.kill = f"after:{rng.uniform(3.0, full_run_s if not i else full_run_s / 2):.1f}"
            else:
                step.kill = f"fault:{rng.choice(FAULT_KILLS)}@{rng.randint(1, 3) if not i else 1}"
            if rng.random() < 0.3:
                step.damage_after_kill = [rng.choice(DAMAGES)]
        steps.append(step)
    return steps


# -- damage ---------------------------------------------------------------------------------------

def damage(out: Path, kind: str, rng: random.Random) -> str:
    """Do one kind of damage to `out`; say what was done ("" when there was nothing to damage)."""
    shards = sorted(p for p in (out / "shards").glob("*.tar")) if (out / "shards").exists() else []
    if kind in ("truncate_shard", "flip_shard", "delete_shard"):
        if not shards:
            return ""
        path = rng.choice(shards)
        data = bytearray(path.read_bytes())
        if kind == "truncate_shard":
            path.write_bytes(bytes(data[: rng.randint(0, len(data) - 1)]))
        elif kind == "flip_shard":
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(data))
        else:
            path.unlink()
        return f"{kind}:{path.name}"
    if kind == "delete_manifest":
        path = out / "manifest.json"
        if not path.exists():
            return ""
        path.unlink()
        return kind
    if kind == "stray_partial":  # what a kill mid-shard leaves
        if not (out / "shards").exists():
            return ""
        (out / "shards" / "pairs-999999.tar.partial").write_bytes(os.urandom(1000))
        return kind
    if kind in ("torn_ledger", "torn_shard_log"):  # what a kill mid-append leaves
        path = out / "state" / ("ledger.jsonl" if kind == "torn_ledger" else "shards.jsonl")
        if not path.exists():
            return ""
        with open(path, "a") as f:
            f.write('{"key": "torn-by-the-soak", "kind": "pa' if kind == "torn_ledger" else '{"url": "shards/pa')
        return kind
    if kind == "unended_log_lines":  # a kill just before a line's newline
        done = ""
        for path in (out / "state" / "ledger.jsonl", out / "state" / "shards.jsonl"):
            if path.exists() and path.read_bytes().endswith(b"\n"):
                path.write_bytes(path.read_bytes()[:-1])
                done = kind
        return done
    if kind == "delete_clip_store":
        stores = sorted((out / "clips").glob("ingest-*")) if (out / "clips").exists() else []
        if not stores:
            return ""
        for store in stores:
            shutil.rmtree(store)
        return kind
    raise ValueError(kind)


# -- running --------------------------------------------------------------------------------------

def command(out: Path, videos: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "factory.cli", "run", CONFIG, "input.demo=false", f"input.paths=[{videos}]",
            f"out={out}", *overrides, "-q"]


def run_factory(out: Path, videos: Path, overrides: list[str], kill: str | None = None,
                fault_state: Path | None = None) -> dict[str, Any]:
    """One `factory run` in its own process group; killed as `kill` says. Returns rc, seconds, stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FACTORY_FAULTS", None)
    delay = None
    if kill and kill.startswith("fault:"):
        env["FACTORY_FAULTS"] = kill.split(":", 1)[1].replace("@", "=kill@")
        fault_state.mkdir(parents=True, exist_ok=True)  # counts hits across Ray worker processes
        for old in fault_state.iterdir():
            old.unlink()
        env["FACTORY_FAULTS_STATE"] = str(fault_state)
    elif kill:
        delay = float(kill.split(":", 1)[1])
    start = time.monotonic()
    proc = subprocess.Popen(command(out, videos, overrides), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and whatever it started in its group
        stdout, stderr = proc.communicate()
    return {"rc": proc.returncode, "s": round(time.monotonic() - start, 1), "stderr": stderr[-3000:],
            "stdout": stdout[-3000:]}


def factory_verify(out: Path) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "factory.cli", "verify", str(out)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc.returncode, (proc.stdout + proc.stderr)[-2000:]


def snapshot(out: Path) -> dict[str, str]:
    """Every file under out (but the lock, which a refused run may take) with its md5."""
    return {p.relative_to(out).as_posix(): file_digest(p, "md5") for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "run.lock"} if out.exists() else {}


# -- checking -------------------------------------------------------------------------------------

def expected_config(out: Path, videos: Path, overrides: list[str]) -> dict[str, Any]:
    args = ["input.demo=false", f"input.paths=[{videos}]", f"out={out}", *overrides]
    return load_factory_config(ROOT / CONFIG, args).to_dict()


def settings_key(out: Path, videos: Path, overrides: list[str]) -> str:
    """What makes two runs' samples the same: the output identity (pipelines/settings.py)."""
    cfg = load_factory_config(ROOT / CONFIG, ["input.demo=false", f"input.paths=[{videos}]", f"out={out}",
                                              *overrides])
    return digest({**pairs_identity(cfg), "ingest": ingest_identity(cfg)})


def tar_samples(path: Path) -> dict[str, dict[str, str]]:
    """key -> {member suffix: md5 of its bytes}."""
    samples: dict[str, dict[str, str]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, _, suffix = member.name.partition(".")
            samples.setdefault(key, {})[suffix] = hashlib.md5(tar.extractfile(member).read()).hexdigest()
    return samples


def contents(out: Path) -> dict[str, Any]:
    """An output's samples as a comparable whole: every fate, and every stored sample's bytes."""
    manifest = read_manifest(out / "manifest.json")
    stored = {}
    for entry in manifest["shardlist"] + manifest["rejected_shardlist"]:
        kind = "kept" if entry in manifest["shardlist"] else "rejected"
        for key, members in tar_samples(out / entry["url"]).items():
            stored[key] = (kind, members)
    fates = sorted((r["key"], r["fate"], r["reason"] or "") for r in read_table(out / manifest["table"]))
    return {"fates": fates, "stored": stored}


def consistency(out: Path, config: dict[str, Any]) -> list[str]:
    """What is wrong with a finished output, beyond `factory verify`'s own checks."""
    problems = []
    try:
        manifest = read_manifest(out / "manifest.json")
    except (OSError, ValueError) as exc:
        return [f"manifest unreadable: {exc}"]
    listed = manifest["shardlist"] + manifest["rejected_shardlist"]
    keys: Counter = Counter()
    kept_keys = []
    for entry in listed:
        path = out / entry["url"]
        if not path.is_file():
            problems.append(f"{entry['url']}: listed, missing")
            continue
        if path.stat().st_size != entry["filesize"] or file_digest(path, "md5") != entry["md5sum"]:
            problems.append(f"{entry['url']}: size/md5 differ from the manifest")
        try:
            shard_keys = list(tar_samples(path))
        except (tarfile.TarError, OSError, EOFError) as exc:
            problems.append(f"{entry['url']}: unreadable ({exc})")
            continue
        if len(shard_keys) != entry["nsamples"]:
            problems.append(f"{entry['url']}: {len(shard_keys)} samples, manifest says {entry['nsamples']}")
        keys.update(shard_keys)
        if entry in manifest["shardlist"]:
            kept_keys += shard_keys
    problems += [f"key {k} in {n} shards" for k, n in keys.items() if n > 1]
    on_disk = {p.relative_to(out).as_posix() for p in (out / "shards").glob("*.tar*")}
    problems += [f"{u}: on disk, not in the manifest" for u in sorted(on_disk - {e["url"] for e in listed})]
    log = read_shard_log(out / "state" / "shards.jsonl")
    if sorted(log.values(), key=lambda e: e["url"]) != sorted(listed, key=lambda e: e["url"]):
        problems.append("state/shards.jsonl and the manifest list different shards")
    stats = manifest.get("stats", {})
    if stats.get("pairs_written") != len(kept_keys):
        problems.append(f"manifest stats say {stats.get('pairs_written')} pairs, shards hold {len(kept_keys)}")
    table = read_table(out / manifest["table"])
    if sorted(r["key"] for r in table if r["fate"] == "kept") != sorted(kept_keys):
        problems.append("samples.parquet's kept keys are not the kept shards' keys")
    if len({r["key"] for r in table}) != len(table):
        problems.append("samples.parquet has a key twice")
    if manifest.get("config") != config:
        problems.append("manifest config is not this run's config")
    summary = json.loads((out / "summary.json").read_text())
    if summary.get("pairs_written") != len(kept_keys) or summary.get("verify_problems"):
        problems.append(f"summary.json: pairs_written {summary.get('pairs_written')}, "
                        f"verify_problems {summary.get('verify_problems')}")
    if load_factory_config(out / "config.yaml").to_dict() != config:
        problems.append("config.yaml is not this run's config")
    return problems


def compare(out: Path, reference: Path) -> list[str]:
    mine, theirs = contents(out), contents(reference)
    problems = []
    if mine["fates"] != theirs["fates"]:
        a, b = set(mine["fates"]), set(theirs["fates"])
        problems.append(f"fates differ from a clean run: extra {sorted(a - b)[:4]}, missing {sorted(b - a)[:4]}")
    for key in sorted(set(mine["stored"]) | set(theirs["stored"])):
        if mine["stored"].get(key) != theirs["stored"].get(key):
            problems.append(f"sample {key}: stored differently from a clean run")
    return problems


# -- the soak -------------------------------------------------------------------------------------

def soak(work: Path, videos: Path, steps: list[Step], seed: int = 0, base: tuple[str, ...] = BASE,
         references: dict[str, Path] | None = None, start_from: Path | None = None, log=print) -> dict[str, Any]:
    """Run `steps` into work/out (a copy of `start_from`, if given); `references`: settings_key ->
    a clean run's output, to compare with (made when missing). Returns {"runs": [...], "ok": bool, ...}."""
    rng = random.Random(seed + 1)  # damage positions; the plan has its own
    out = work / "out"
    if start_from is not None:
        shutil.copytree(start_from, out)
    references = dict(references or {})
    settings: dict[str, Any] = {}  # the allowed changes so far, key -> value
    records = []
    started = time.monotonic()
    for number, step in enumerate(steps, 1):
        rec: dict[str, Any] = {"run": number, "step": asdict(step), "attempts": [], "problems": []}
        records.append(rec)
        t0 = time.monotonic()
        tried = dict(settings)
        if step.change:
            tried[step.change[0]] = step.change[1]
        rec["damage_done"] = [d for d in (damage(out, k, rng) for k in step.damage) if d]
        kill = unlanded = step.kill  # unlanded: the planned kill until one lands
        while True:
            overrides = [*base, *(f"{k}={v}" for k, v in tried.items())]
            before = snapshot(out)
            result = run_factory(out, videos, overrides, kill, work / "fault_state")
            rec["attempts"].append({"overrides": overrides[len(base):], "kill": kill, "rc": result["rc"],
                                    "s": result["s"]})
            if kill and result["rc"] == -signal.SIGKILL:
                kill = unlanded = None  # killed: run the same command again, to the end
                rec["damage_done"] += [d for d in (damage(out, k, rng) for k in step.damage_after_kill) if d]
                continue
            kill = None
            if result["rc"] == 2 and tried != settings:
                # a refused change: exit 2 naming a differing key, nothing in out touched
                key = step.change[0]
                after = snapshot(out)
                if key not in result["stderr"]:
                    rec["problems"].append(f"refusal does not name {key}: {result['stderr'][-300:]}")
                if after != before:
                    changed = sorted(set(before.items()) ^ set(after.items()))
                    rec["problems"].append(f"refused run changed out: {sorted({p for p, _ in changed})[:6]}")
                rec["refused"] = True
                tried = dict(settings)
                kill = unlanded  # a kill the refused run ended too soon for goes to the allowed run
                continue
            break
        rec["rc"] = result["rc"]
        if result["rc"] != 0:
            rec["problems"].append(f"run exit {result['rc']}: {result['stderr'][-500:]}")
        else:
            settings = tried
            config = expected_config(out, videos, overrides)
            code, text = factory_verify(out)
            rec["verify_rc"] = code
            if code != 0:
                rec["problems"].append(f"factory verify exit {code}: {text[-500:]}")
            rec["problems"] += consistency(out, config)
            manifest = read_manifest(out / "manifest.json")
            rec["samples"] = sum(e["nsamples"] for e in manifest["shardlist"])
            rec["repaired"] = json.loads((out / "summary.json").read_text()).get("shards_repaired", [])
            key = settings_key(out, videos, overrides)
            if key not in references:  # a clean run of these settings, in a fresh folder
                ref_out = work / f"reference-{key}"
                shutil.rmtree(ref_out, ignore_errors=True)
                ref = run_factory(ref_out, videos, overrides)
                if ref["rc"] != 0:
                    rec["problems"].append(f"reference run exit {ref['rc']}: {ref['stderr'][-300:]}")
                references[key] = ref_out
                rec["reference_s"] = ref["s"]
            rec["problems"] += compare(out, references[key])
        rec["s"] = round(time.monotonic() - t0, 1)
        rec["ok"] = not rec["problems"]
        log(describe(rec))
    ok = all(r["ok"] for r in records)
    summary = {"runs": records, "ok": ok, "seconds": round(time.monotonic() - started, 1),
               "kills": sum(1 for r in records for a in r["attempts"] if a["rc"] == -signal.SIGKILL),
               "refusals": sum(1 for r in records if r.get("refused")),
               "damage": sum(len(r["damage_done"]) for r in records),
               "repaired_shards": sum(len(r.get("repaired", [])) for r in records),
               "inconsistent_runs": [r["run"] for r in records if not r["ok"]]}
    return summary


def describe(rec: dict[str, Any]) -> str:
    step = rec["step"]
    change = f"{step['change'][0]}={step['change'][1]}" if step["change"] else "-"
    attempts = " ".join(f"{a['rc']}({a['s']}s{', kill ' + a['kill'] if a['kill'] else ''})"
                        for a in rec["attempts"])
    return (f"#{rec['run']:02d} change={change}{' REFUSED' if rec.get('refused') else ''} "
            f"damage={','.join(rec['damage_done']) or '-'} runs=[{attempts}] verify={rec.get('verify_rc', '-')} "
            f"samples={rec.get('samples', '-')} repaired={len(rec.get('repaired', []))} "
            f"consistent={'yes' if rec['ok'] else 'NO: ' + '; '.join(rec['problems'])[:600]} ({rec['s']}s)")


def make_videos(folder: Path) -> Path:
    """The tests' talking_videos: two short talking-face videos, a non-video and a broken file."""
    from factory.demo import make_talking_video

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "two.mp4").exists():
        make_talking_video(folder / "one.mp4", "Peter piper picked a peck of pickled peppers, a peck indeed.",
                           seconds=5.0, size=256, seed=1)
        make_talking_video(folder / "two.mp4", "How much wood would a woodchuck chuck if it could chuck wood?",
                           seconds=5.0, size=256, seed=2)
        (folder / "notes.txt").write_text("not a video")
        (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/soak", help="working folder (emptied first)")
    parser.add_argument("--log", default=None, help="JSON log (default WORK/soak.json)")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    shutil.rmtree(work / "out", ignore_errors=True)
    for ref in work.glob("reference-*"):
        shutil.rmtree(ref)
    videos = make_videos(work / "videos")
    steps = plan(random.Random(args.seed), args.runs)
    result = soak(work, videos, steps, seed=args.seed, log=lambda line: print(line, flush=True))
    result["plan_seed"] = args.seed
    log_path = Path(args.log) if args.log else work / "soak.json"
    log_path.write_text(json.dumps(result, indent=1, default=str))
    print(f"soak: {len(steps)} runs in {result['seconds']} s; {result['kills']} kill -9, "
          f"{result['refusals']} refused config changes, {result['damage']} damages, "
          f"{result['repaired_shards']} shards repaired; "
          f"{'all consistent' if result['ok'] else 'INCONSISTENT runs: ' + str(result['inconsistent_runs'])}; "
          f"log {log_path}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
