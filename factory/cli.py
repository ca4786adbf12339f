"""`factory run|ingest|pairs|refilter|verify|eval|report|train-syncnet|train-generator|dub ...`: the command-line entry point."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import textwrap
import threading
from contextlib import contextmanager

from factory.config import ConfigError

EXIT_DAMAGED, EXIT_CONFIG, EXIT_NO_INPUT, EXIT_RESOURCES = 1, 2, 3, 4
EXIT_CODES = """exit codes:
  0  done (rejected clips and pairs are not errors)
  1  factory verify found problems, or a run's output does not match its manifest
  2  bad config (a key, a value out of range), or out is not writable or in use by another run
  3  no input to read (missing path, empty folder, no videos in it)
  4  the cluster cannot run a stage (e.g. no GPU for a GPU stage)
  130  interrupted (Ctrl-C; SIGTERM: 143, or 1 inside a Ray call): rerun the same command to resume"""


DESCRIPTION = ("Make pseudo-pair training data for lip-sync models: ingest talking-head videos into "
               "face clips, pair each clip with a generated mouth, and write WebDataset shards with a "
               "manifest and a per-sample table.")

REFILTER_NOTE = ("Each refilter starts again from the run's own thresholds (OUT/config.yaml) and its recorded "
                 "scores: it does not build on an earlier refilter, so give every threshold you want changed "
                 "each time.")

COMMANDS = {  # name: (one line for `factory --help`, the sentence(s) at the top of `factory NAME --help`)
    "run": ("Ingest videos, make pairs, write shards and a manifest.",
            "Ingest the input videos into a clip store, make pairs from the clips, and write shards, "
            "manifest.json, samples.parquet and a report into out. Rerun the same command to resume."),
    "ingest": ("Ingest videos into a clip store (no pairs).",
               "Ingest the input videos into a clip store that `factory pairs` and `factory train-syncnet` "
               "can read (clip_stores=[...])."),
    "pairs": ("Make pairs from clip stores, write shards and a manifest.",
              "Make pairs from existing clip stores (clip_stores=[...]) and write shards, manifest.json "
              "and samples.parquet into out, without ingesting again."),
    "refilter": ("Re-judge a finished run's recorded scores with new thresholds.",
                 "Re-judge a finished run's recorded scores with new filter thresholds, without running "
                 "any model; the run's shards are not changed. " + REFILTER_NOTE),
    "verify": ("Check an output folder against its manifest.",
               "Check an output folder against its manifest: every shard's size and checksum, the "
               "sample keys, and the per-sample table."),
    "eval": ("Measure generated videos against references, or a run's pairs.",
             "Measure generated videos against references, or a finished run's pairs (PSNR, SSIM, LPIPS, "
             "LMD, CSIM, Sync-C/D, FID, FVD), and write the numbers as JSON."),
    "report": ("Write one self-contained HTML page about a finished run.",
               "Write one self-contained HTML page about a finished run: counts, rejections, score "
               "histograms, throughput and a gallery of pairs."),
    "train-syncnet": ("Train a SyncNet on clip stores.",
                      "Train a SyncNet on clip stores; its out/final folder is what ingest.syncnet_path "
                      "takes."),
    "train-generator": ("Train a learned generator (dit_inpainter, latent_editor) on clip stores.",
                        "Train a learned mask-based generator on clip stores (the config's `generator` key "
                        "picks dit_inpainter or latent_editor); its loop.out/final folder is what "
                        "generate.weights takes. Rerun the same command to resume."),
    "train-dubber": ("Train a mask-free dubber (xdub-stage2, flashlips-refine) on pair manifests.",
                     "Train a mask-free dubber on the factory's pairs (manifests=[...]; the config's `recipe` "
                     "key picks xdub-stage2 or flashlips-refine, each phase or stage its own run); its "
                     "loop.out/final folder is what `factory dub --checkpoint` or the next phase's init_from "
                     "takes. Local by default, Ray Train with loop.executor=ray. Rerun the same command to "
                     "resume."),
    "refine": ("Self-refinement rounds: the editor makes pairs, trains on them, becomes the next generator.",
               "FlashLips self-refinement over an existing clip store: each round makes pairs with the "
               "round's latent_editor (`factory pairs`, no re-ingest), trains flashlips-refine on them, and "
               "the result is the next round's generator; every round's manifest, checkpoint and held-out "
               "numbers are kept side by side in OUT/rounds.json. Rerun the same command to resume."),
    "dub": ("Dub a video: its face re-rendered to speak new audio (MP4 out).",
            "Re-render the face in VIDEO so its lips follow AUDIO, with the dubber in --checkpoint (a "
            "folder from `factory train-generator` / `factory train-dubber`) or a generator that needs no "
            "weights (--generator transplant), and write OUT.mp4. The output keeps the video's frame count, "
            "frame rate and size; its sound is AUDIO alone, trimmed to the video's length or padded with "
            "silence. The largest face is dubbed; frames with no face are the original frames. Everything "
            "outside the pasted lower face is the original picture (re-encoded)."),
}

DUB_EXIT_CODES = """exit codes:
  0  done
  2  bad arguments: no such checkpoint folder, a folder factory dub cannot run, OUT not writable
  3  bad input: the audio cannot be read or is empty, the video cannot be read, no face in the video
  130  interrupted (Ctrl-C)"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="factory", description=textwrap.fill(DESCRIPTION, 100), epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        short, long = COMMANDS[name]
        return sub.add_parser(name, help=short, description=textwrap.fill(long, 100), epilog=EXIT_CODES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    for name in ("run", "ingest", "pairs"):
        cmd = command(name)
        cmd.add_argument("config", help="YAML file, e.g. configs/demo.yaml")
        cmd.add_argument("overrides", nargs="*", help="key=value, e.g. out=runs/x executor.kind=local")
        cmd.add_argument("-q", "--quiet", action="store_true",
                         help="no progress bars, and only warnings and errors logged")
    refilter = command("refilter")
    refilter.add_argument("out", help="the run's output directory, or its URL (s3://...)")
    refilter.add_argument("overrides", nargs="*", help="filters.key=value, e.g. filters.identity.min_csim=0.9")
    verify = command("verify")
    verify.add_argument("out", help="the run's output directory, or its URL (s3://...)")
    evaluate = command("eval")
    evaluate.add_argument("target", nargs="?", help="a finished run's folder or its manifest.json "
                          "(or give eval.generated=DIR eval.reference=DIR)")
    evaluate.add_argument("overrides", nargs="*", help="eval.key=value, e.g. eval.out=eval.json")
    evaluate.add_argument("--config", help="YAML file with an `eval:` section")
    report = command("report")
    report.add_argument("out", help="the run's output directory, or its URL (s3://...)")
    report.add_argument("-o", "--output", help="where to write it (default OUT/report.html)")
    report.add_argument("--pairs", type=int, default=12, help="kept pairs in the gallery (default 12)")
    syncnet = command("train-syncnet")
    syncnet.add_argument("config", help="YAML file, e.g. configs/syncnet_cpu.yaml")
    syncnet.add_argument("overrides", nargs="*", help="key=value, e.g. clip_stores=[runs/demo/clips/ingest-...] executor=ray")
    generator = command("train-generator")
    generator.add_argument("config", help="YAML file, e.g. configs/generator_editor_cpu.yaml")
    generator.add_argument("overrides", nargs="*", help="key=value, e.g. clip_stores=[...] loop.steps=200 loop.executor=ray")
    dubber = command("train-dubber")
    dubber.add_argument("config", help="YAML file, e.g. configs/dubber_xdub_cpu.yaml")
    dubber.add_argument("overrides", nargs="*", help="key=value, e.g. manifests=[runs/demo] loop.steps=200")
    refine = command("refine")
    refine.add_argument("config", help="YAML file, e.g. configs/refine_cpu.yaml")
    refine.add_argument("overrides", nargs="*", help="key=value, e.g. rounds=3 out=runs/refine")
    dub = command("dub")
    dub.epilog = DUB_EXIT_CODES
    dub.add_argument("video", help="the video to dub (any container FFmpeg reads)")
    dub.add_argument("audio", help="the new audio (WAV, MP3, M4A, or a video's sound track)")
    model = dub.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a generator or dubber folder (its config.json names which)")
    model.add_argument("--generator", help="a generator that needs no weights, e.g. transplant")
    dub.add_argument("-o", "--output", required=True, help="the MP4 to write (replaced atomically)")
    dub.add_argument("--segment-frames", type=int, default=125, help="frames per dubber call at 25 fps (default 125)")
    dub.add_argument("--crop-size", type=int, help="side of the aligned face crop (default: the dubber's, 256 for generators)")
    dub.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default 18)")
    dub.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quiet = getattr(args, "quiet", False)  # -q: warnings and errors only (the embedded Ray follows)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with _sigterm_unwinds():
        try:
            _refuse_url_arguments(args)
        except ConfigError as exc:
            print(f"factory: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            if args.command in ("run", "ingest", "pairs"):
                return run_command(args.config, args.overrides, progress=not args.quiet, command=args.command)
            if args.command == "verify":
                return verify_command(args.out)
            if args.command == "refilter":
                return refilter_command(args.out, args.overrides)
            if args.command == "eval":
                return eval_command(args.target, args.overrides, args.config)
            if args.command == "report":
                return report_command(args.out, args.output, args.pairs)
            if args.command == "train-syncnet":
                return train_syncnet_command(args.config, args.overrides)
            if args.command == "train-generator":
                return train_command("factory.trainers.generators:train_generator", args.config, args.overrides)
            if args.command == "train-dubber":
                return train_command("factory.trainers.dubbers:train_dubber", args.config, args.overrides)
            if args.command == "refine":
                return refine_command(args.config, args.overrides)
            if args.command == "dub":
                return dub_command(args)
        except KeyboardInterrupt:  # the executor has shut its Ray down on the way out
            print("factory: interrupted; rerun the same command to resume", file=sys.stderr)
            return 130
    return EXIT_CONFIG


def _refuse_url_arguments(args: argparse.Namespace) -> None:
    """Paths given as arguments (not overrides) that still must be local: a config file, and the
    outputs of eval and dub (run, ingest, pairs, verify, report, refilter and the trainers take URLs)."""
    from factory.storage import refuse_urls

    names = ("config", "target", "video", "audio", "checkpoint")
    if args.command not in ("verify", "report", "refilter"):
        names += ("out", "output")
    given = {name: getattr(args, name) for name in names if getattr(args, name, None)}
    if args.command == "eval":  # its overrides name manifests, videos and the report: all read locally
        overrides = [*args.overrides, given.pop("target")] if "=" in given.get("target", "") else args.overrides
        given.update(o.split("=", 1) for o in overrides if "=" in o)
    refuse_urls(given, f"`factory {args.command}`")


@contextmanager
def _sigterm_unwinds():
    """SIGTERM (docker stop, a scheduler) unwinds like Ctrl-C, so the embedded Ray is shut down
    instead of left running; the previous handler is back afterwards (tests call main in-process)."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def eval_command(target: str | None, overrides: list[str], config: str | None = None) -> int:
    from factory.eval.evaluate import NoItems, evaluate, format_table, write_report
    from factory.eval.settings import load_eval_config

    if target is not None and "=" in target:  # only overrides were given
        target, overrides = None, [target, *overrides]
    try:
        cfg = load_eval_config(config, overrides, target)
    except ConfigError as exc:
        print(f"factory: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        report = evaluate(cfg)
    except (NoItems, FileNotFoundError) as exc:
        print(f"factory: {exc}", file=sys.stderr)
        return EXIT_NO_INPUT
    path = write_report(report, cfg.out)
    print(format_table(report))
    print(f"output: {path}")
    return 0


def report_command(out: str, output: str | None = None, pairs: int = 12) -> int:
    from factory.report import ReportError, build_report

    try:
        path = build_report(out, output, pairs=pairs)
    except ReportError as exc:
        print(f"factory: {exc}", file=sys.stderr)
        return EXIT_NO_INPUT
    print(f"report: {path}")
    return 0


def train_syncnet_command(config_path: str, overrides: list[str]) -> int:
    from factory.trainers.syncnet import load_train_config, run_training

    try:
        metrics = run_training(load_train_config(config_path, overrides))
    except ConfigError as exc:
        print(f"factory: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps({k: v for k, v in metrics.items() if k != "evals"}, indent=1))
    return 0


def train_command(entry: str, config_path: str, overrides: list[str]) -> int:
    """train-generator / train-dubber: `entry` ("module:function") trains from a config file."""
    import importlib

    module, function = entry.split(":")
    try:
        metrics = getattr(importlib.import_module(module), function)(config_path, overrides)
    except ConfigError as exc:
        print(f"factory: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps({k: v for k, v in metrics.items() if k != "evals"}, indent=1))
    return 0


def refine_command(config_path: str, overrides: list[str]) -> int:
    from factory.executors.ray_executor import ResourceError
    from factory.payload import ContractError
    from pipelines.ingest import NoInputError
    from pipelines.refine import refine

    try:
        record = refine(config_path, overrides)
    except (ConfigError, ContractError) as exc:  # OutputError (out in use / not writable) is a ConfigError
        print(f"factory: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except NoInputError as exc:
        print(f"factory: {exc}", file=sys.stderr)
        return EXIT_NO_INPUT
    except ResourceError as exc:
        print(f"factory: {exc}", file=sys.stderr)
        return EXIT_RESOURCES
    for r in record["rounds"]:
        print(json.dumps(r))
    return 0


def dub_command(args: argparse.Namespace) -> int:
    from factory.dubbing import BadInput, DubSettings, dub
    from factory.dubbing.track import TrackSettings

    settings = DubSettings(segment_frames=args.segment_frames, crf=args.crf,
                           track=TrackSettings(crop_size=args.crop_size))
    try:
        report = dub(args.video, args.audio, args.output, checkpoint=args.checkpoint, generator=args.generator,
                     settings=settings, progress=not args.quiet)
    except ConfigError as exc:
        print(f"factory: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BadInput as exc:
        print(f"factory: {exc}", file=sys.stderr)
        return EXIT_NO_INPUT
    print(json.dumps(report, indent=1))
    print(f"output: {report['output']}")
    return 0


def verify_command(out: str) -> int:
    from factory import storage
    from manifests.verify import not_a_run, verify

    what = not_a_run(out)
    if what:  # nothing to check is no input, not damage
        print(f"factory verify: {storage.redact(out)} is not a run's output ({what})", file=sys.stderr)
        return EXIT_NO_INPUT
    problems, counts = verify(out)
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        print(f"factory verify: {len(problems)} problem(s) in {out}", file=sys.stderr)
        return 1
    print(f"OK {out}: {counts['shards']} shards, {counts['samples']} samples, {counts['table_rows']} table rows")
    return 0


def refilter_command(out: str, overrides: list[str]) -> int:
    from contextlib import nullcontext
    from pathlib import Path

    from factory.out_lock import hold_output
    from factory.storage import is_url
    from pipelines.refilter import refilter

    try:  # not beside a run still writing; a path that is no run folder: refilter says so, nothing is made
        locked = is_url(out) or (Path(out) / "state").is_dir()  # a URL's lock is a local file: nothing made there
        with hold_output(out) if locked else nullcontext():
            summary = refilter(out, overrides)
    except ConfigError as exc:
        print(f"factory: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    info = summary["refilter"]
    print(f"refiltered {out}: {info['kept']} pairs kept (judged from the run's thresholds with only "
          "these changes, not on top of an earlier refilter)")
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
    from factory.out_lock import OutputError
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
    except OutputError as exc:
        print(f"factory: {exc}", file=sys.stderr)
        return EXIT_CONFIG
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
    for url in summary.get("shards_repaired", []):
        print(f"repaired: {url} was damaged (size or md5 not as committed); its samples were made again")
    if summary.get("verify_problems"):
        for problem in summary["verify_problems"]:
            print(f"factory: verify: {problem}", file=sys.stderr)
        print(f"factory: the output in {cfg.out} does not match its manifest (see above)", file=sys.stderr)
        return EXIT_DAMAGED
    print(f"output: {cfg.out}/manifest.json")
    _report_after_run(cfg.out)
    return 0


def _report_after_run(out: str) -> None:
    """The run is done and committed; a report that fails to build must not fail it."""
    from factory.report import build_report

    try:
        print(f"report: {build_report(out)}")
    except Exception as exc:  # noqa: BLE001  (a convenience: say so, and how to retry)
        logging.getLogger("factory").warning("no report (%s: %s); retry with `factory report %s`",
                                             type(exc).__name__, exc, out)


if __name__ == "__main__":
    sys.exit(main())
