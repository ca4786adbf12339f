"""The end-of-run summary: counts from the ledger (so it covers resumed runs too), timing, and
optionally what each stage did this run (an executor's `stage_stats()`)."""

from __future__ import annotations

from collections import Counter
from typing import Any


def summarise(entries: list[dict[str, Any]], videos_in: int, wall_s: float, written_now: int,
              frames_per_pair: int, skipped_files: int, worker_failures: int,
              stage_stats: dict[str, dict] | None = None) -> dict[str, Any]:
    """`stage_stats`: stage name -> {"records", "seconds", "passed", "dropped_<reason>"...},
    kept as "stages" (this run's work only, unlike the ledger counts)."""
    by_kind = Counter(e.get("kind") for e in entries)
    kept = [e for e in entries if e["fate"] == "kept"]
    reasons = Counter(e["reason"] for e in entries if e["fate"] == "rejected")
    clips = sum(1 for e in entries if e.get("kind") in ("clip", "pair"))
    return {
        "videos_in": videos_in,
        "videos_rejected": sum(1 for e in entries if e.get("kind") == "video"),
        "clips": clips,
        "pairs_written": len(kept),
        "pairs_written_this_run": written_now,
        "pairs_set_aside": sum(1 for e in entries if e["fate"] == "rejected" and e.get("shard")),
        "rejections": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "files_skipped_by_extension": skipped_files,
        "worker_failures": worker_failures,
        "wall_s": round(wall_s, 2),
        "pairs_per_s": round(written_now / wall_s, 3) if wall_s > 0 else 0.0,
        "frames_per_s": round(written_now * frames_per_pair / wall_s, 1) if wall_s > 0 else 0.0,
        "records_by_kind": dict(by_kind),
        "stages": stage_stats or {},
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"videos in        {s['videos_in']}  (rejected whole: {s['videos_rejected']})",
        f"clips            {s['clips']}",
        f"pairs written    {s['pairs_written']}  ({s['pairs_written_this_run']} this run; "
        f"{s.get('pairs_set_aside', 0)} below a threshold kept in rejected shards)",
        f"wall time        {s['wall_s']:.1f} s",
        f"throughput       {s['pairs_per_s']:.2f} pairs/s, {s['frames_per_s']:.0f} pair-frames/s",
    ]
    if s["worker_failures"]:
        lines.append(f"worker failures  {s['worker_failures']} records (recorded as rejections)")
    if s["files_skipped_by_extension"]:
        lines.append(f"skipped files    {s['files_skipped_by_extension']} (not a video extension)")
    if s["rejections"]:
        lines.append("rejections:")
        lines += [f"  {reason:<32} {n}" for reason, n in s["rejections"].items()]
    if s.get("stages"):
        lines.append("stages (this run):")
        lines += [format_stage(name, counts) for name, counts in s["stages"].items()]
    return "\n".join(lines)


def format_stage(name: str, counts: dict[str, float]) -> str:
    dropped = sum(n for key, n in counts.items() if key.startswith("dropped_"))
    seconds = counts.get("seconds", 0.0)
    return (f"  {name:<20} {counts.get('records', 0):>6} in  {counts.get('passed', 0):>6} passed  "
            f"{dropped:>6} dropped  {seconds:8.1f} s")
