"""`factory run|ingest|pairs|refilter|verify|train-syncnet ...`: the command-line entry point."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from factory.config import ConfigError

EXIT_CONFIG, EXIT_NO_INPUT, EXIT_RESOURCES = 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="factory", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "ingest videos, make pairs, write shards and a manifest"),
                       ("ingest", "ingest videos into a clip store (no pairs)"),
                       ("pairs", "make pairs from clip stores (clip_stores=[...]), write shards and a manifest")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("config", help="YAML file, e.g. configs/demo.yaml")
        cmd.add_argument("overrides", nargs="*", help="key=value, e.g. out=runs/x executor.kind=local")
        cmd.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    refilter = sub.add_parser("refilter", help="re-judge a finished run's recorded scores with new thresholds")
    refilter.add_argument("out", help="the run's output directory")
    refilter.add_argument("overrides", nargs="*", help="filters.key=value, e.g. filters.identity.min_csim=0.9")
    verify = sub.add_parser("verify", help="check an output directory against its manifest")
    verify.add_argument("out", help="the run's output directory")
    syncnet = sub.add_parser("train-syncnet", help="train a SyncNet on clip stores (out/final: ingest.syncnet_path)")
    syncnet.add_argument("config", help="YAML file, e.g. configs/syncnet_cpu.yaml")
    syncnet.add_argument("overrides", nargs="*", help="key=value, e.g. clip_stores=[runs/demo/clips/ingest-...] executor=ray")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command in ("run", "ingest", "pairs"):
        return run_command(args.config, args.overrides, progress=not args.quiet, command=args.command)
    if args.command == "verify":
        return verify_command(args.out)
    if args.command == "refilter":
        return refilter_command(args.out, args.overrides)
    if args.command == "train-syncnet":
        return train_syncnet_command(args.config, args.overrides)
    return EXIT_CONFIG


def train_syncnet_command(config_path: str, overrides: list[str]) -> int:
    from factory.trainers.syncnet import load_train_config, run_training

    try:
        metrics = run_training(load_train_config(config_path, overrides))
    except ConfigError as exc:
        print(f"factory: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps({k: v for k, v in metrics.items() if k != "evals"}, indent=1))
    return 0


def verify_command(out: str) -> int:
    from manifests.verify import verify

    problems, counts = verify(out)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        print(f"factory verify: {len(problems)} problem(s) in {out}", file=sys.stderr)
        return 1
    print(f"OK {out}: {counts['shards']} shards, {counts['samples']} samples, {counts['table_rows']} table rows")
    return 0


def refilter_command(out: str, overrides: list[str]) -> int:
    from pipelines.refilter import refilter

    try:
        summary = refilter(out, overrides)
    except ConfigError as exc:
        print(f"factory: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    info = summary["refilter"]
    print(f"refiltered {out}: {info['kept']} pairs kept")
    for reason, n in summary["rejections"].items():
        print(f"  rejected {reason:<32} {n}")
    if info["would_pass_without_bytes"]:
        print(f"  {info['would_pass_without_bytes']} pairs would now pass but were not written "
              "(the run had write.keep_rejected=false)")
    print(f"output: {out}/manifest.json")
    return 0


def run_command(config_path: str, overrides: list[str], progress: bool = True, command: str = "run") -> int:
    from factory.executors import make_executor
    from factory.executors.ray_executor import ResourceError
    from factory.payload import ContractError
    from factory.summary import format_summary
    from pipelines.ingest import NoInputError, run_ingest
    from pipelines.pseudo_pairs import run, run_pairs
    from pipelines.settings import load_factory_config

    try:
        cfg = load_factory_config(config_path, overrides)
        executor = make_executor(cfg.executor)
    except (ConfigError, ValueError) as exc:
        print(f"factory: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    job = {"run": run, "ingest": run_ingest, "pairs": run_pairs}[command]
    try:
        summary = job(cfg, executor, progress=progress and cfg.executor.progress)
    except (ConfigError, ContractError) as exc:
        print(f"factory: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except NoInputError as exc:
        print(f"factory: {exc}", file=sys.stderr)
        return EXIT_NO_INPUT
    except ResourceError as exc:
        print(f"factory: {exc}", file=sys.stderr)
        return EXIT_RESOURCES
    finally:
        executor.close()
    if command == "ingest":
        print(json.dumps(summary, indent=1))
        print(f"clip store: {summary['clip_store']}")
        return 0
    print(format_summary(summary))
    print(f"output: {cfg.out}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
