"""`factory run CONFIG [key=value ...]`: the command-line entry point."""

from __future__ import annotations

import argparse
import logging
import sys

from factory.config import ConfigError, load_config

EXIT_CONFIG, EXIT_NO_INPUT, EXIT_RESOURCES = 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="factory", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="ingest videos, make pairs, write shards and a manifest")
    run.add_argument("config", help="YAML file, e.g. configs/demo.yaml")
    run.add_argument("overrides", nargs="*", help="key=value, e.g. out=runs/x executor.kind=local")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    refilter = sub.add_parser("refilter", help="re-judge a finished run's recorded scores with new thresholds")
    refilter.add_argument("out", help="the run's output directory")
    refilter.add_argument("overrides", nargs="*", help="filters.key=value, e.g. filters.identity.min_csim=0.9")
    verify = sub.add_parser("verify", help="check an output directory against its manifest")
    verify.add_argument("out", help="the run's output directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "run":
        return run_command(args.config, args.overrides, progress=not args.quiet)
    if args.command == "verify":
        return verify_command(args.out)
    if args.command == "refilter":
        return refilter_command(args.out, args.overrides)
    return EXIT_CONFIG


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


def run_command(config_path: str, overrides: list[str], progress: bool = True) -> int:
    from factory.executors import make_executor
    from factory.executors.ray_executor import ResourceError
    from factory.summary import format_summary
    from pipelines.pseudo_pairs import NoInputError, run

    try:
        cfg = load_config(config_path, overrides)
        executor = make_executor(cfg.executor)
    except (ConfigError, ValueError) as exc:
        print(f"factory: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        summary = run(cfg, executor, progress=progress and cfg.executor.progress)
    except ConfigError as exc:
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
    print(format_summary(summary))
    print(f"output: {cfg.out}/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
