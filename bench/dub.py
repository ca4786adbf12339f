"""`factory dub` frames/s per dubber on one demo talking video, in one run.

    .venv/bin/python bench/dub.py [--seconds 8] [--size 384] [--steps 25] [--run OUT] [--json PATH]

The same video and new audio through `factory.dubbing.dub` with:
  - a pass-through dubber (renders nothing, alpha 0): tracking, pasting and encoding alone, the
    reference every other row's ratio is taken against (near 1: the pipeline is the bottleneck);
  - transplant (training-free), the tiny random latent_editor (one pass per frame: FlashLips'
    single step) and the tiny random dit_inpainter at --steps sampler steps (X-Dub's multi-step),
    each saved as a folder and loaded with --checkpoint as a user would;
  - the mask-free dubbers of `factory train-dubber`, their folders saved from freshly built
    (random, untrained) models of the CPU recipes: xdub-stage2 (configs/dubber_xdub_cpu.yaml, a
    phase-3 folder with both LoRA experts, --steps sampler steps, 32 px) and flashlips-refine
    (configs/dubber_flashlips_cpu.yaml, a lip_flow folder: the lip-pose sampler, then one editor
    pass per frame, 64 px; only with --run, a finished factory run whose pairs set the lip-pose
    normalisation the lip_flow stage records);
then the dubber pass alone (the `dub_s` part of the report): each single-step dubber over its
multi-step counterpart (latent_editor over dit_inpainter, flashlips-refine over xdub-stage2): the
single- vs multi-step ratio (the papers: ~100 FPS vs ~1-5 FPS on GPUs; tiny random models on CPU
say little about those numbers, only about the pipeline around them).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import add_json_flag, emit, row  # noqa: E402
from factory.dubbing import DubbedSegment, DubSettings, dub, register_dubber  # noqa: E402


class PassThrough:
    name, crop_size, motion_frames, fps, sample_rate = "bench-passthrough", 256, 0, 25, 16000

    def setup(self, device: str) -> None:
        pass

    def dub_segment(self, frames, landmarks, audio_16k, motion, seed=0) -> DubbedSegment:
        return DubbedSegment(frames, np.zeros(frames.shape[:3], np.uint8))


register_dubber("bench-passthrough")(lambda folder, config: PassThrough())


def folders(tmp: Path, steps: int, run: str | None) -> dict[str, Path]:
    import torch

    from factory.generators.dit_inpainter import DiTInpainterGenerator
    from factory.generators.latent_editor import LatentEditorGenerator
    from factory.generators.transplant import TransplantGenerator

    torch.set_num_threads(1)  # tiny tensors: a second thread only spins on a shared 2-core box
    out = {name: tmp / name for name in ("passthrough", "transplant", "latent_editor", "dit_inpainter")}
    out["passthrough"].mkdir()
    (out["passthrough"] / "config.json").write_text(json.dumps({"recipe": "bench-passthrough"}))
    TransplantGenerator().save_pretrained(out["transplant"])
    LatentEditorGenerator.tiny().save_pretrained(out["latent_editor"])
    DiTInpainterGenerator.tiny(steps=steps).save_pretrained(out["dit_inpainter"])
    out["xdub-stage2"] = xdub_folder(tmp, steps)
    if run and (ROOT / FLASHLIPS).is_file():
        out["flashlips-refine"] = flashlips_folder(tmp, run)
    return out


XDUB, FLASHLIPS = "configs/dubber_xdub_cpu.yaml", "configs/dubber_flashlips_cpu.yaml"


def saved(config: str, overrides: list[str], folder: Path) -> Path:
    """A recipe's folder (what its run's loop.out/final would be), saved from a freshly built model."""
    import torch

    from factory.trainers.dubbers import load_recipe

    recipe = load_recipe(str(ROOT / config), [*overrides, f"loop.out={folder}-run"])
    recipe.save_pretrained(recipe.build_model(torch.device("cpu")), folder)
    return folder


def xdub_folder(tmp: Path, steps: int) -> Path:
    """Phase 1 -> 2 -> 3, so the folder holds both LoRA experts (routed by flow time when sampling)."""
    sampler = [f"eval.steps={steps}"]
    p1 = saved(XDUB, [*sampler, "phase=1"], tmp / "xdub_p1")
    p2 = saved(XDUB, [*sampler, "phase=2", f"init_from={p1}"], tmp / "xdub_p2")
    return saved(XDUB, [*sampler, "phase=3", f"init_from={p2}"], tmp / "xdub_p3")


def flashlips_folder(tmp: Path, run: str) -> Path:
    """The editor stage's folder, then the lip_flow stage's (its pose statistics from the run's
    pairs): the dubber folder."""
    data = [f"manifests=[{run}]", "pose_stats_segments=4"]
    editor = saved(FLASHLIPS, [*data, "stage=editor"], tmp / "flashlips_editor")
    return saved(FLASHLIPS, [*data, "stage=lip_flow", f"init_from={editor}"], tmp / "flashlips_dubber")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--size", type=int, default=384, help="video side in pixels (the demo's)")
    parser.add_argument("--steps", type=int, default=25, help="dit_inpainter and xdub-stage2 sampler steps")
    parser.add_argument("--run", help="a finished factory run (its pairs): adds the flashlips-refine row")
    add_json_flag(parser)
    args = parser.parse_args()
    from factory.demo import SENTENCES, make_talking_video, speak

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = make_talking_video(tmp / "video.mp4", SENTENCES[0], seconds=args.seconds, size=args.size, seed=0)
        sf.write(tmp / "new.wav", speak(SENTENCES[1])[:int(args.seconds * 16000)], 16000, subtype="PCM_16")
        reports = {}
        for name, folder in folders(tmp, args.steps, args.run).items():
            reports[name] = dub(video, tmp / "new.wav", tmp / f"{name}.mp4", checkpoint=folder, settings=DubSettings())
            print(name, json.dumps(reports[name]), flush=True)
    base = reports["passthrough"]["frames_per_s"]
    rows = [row("dub, pass-through (track + paste + encode)", base, "frames/s")]
    multi = ("dit_inpainter", "xdub-stage2")
    rows += [row(f"dub, {name}" + (f" ({args.steps} steps)" if name in multi else ""),
                 r["frames_per_s"], "frames/s", base, "pass-through") for name, r in reports.items()
             if name != "passthrough"]
    alone = {name: r["frames"] / max(r["dub_s"], 1e-9) for name, r in reports.items()}
    for single, several in (("latent_editor", "dit_inpainter"), ("flashlips-refine", "xdub-stage2")):
        if single in alone and several in alone:
            rows.append(row(f"dubber pass alone, {single} (single step)", alone[single], "frames/s",
                            alone[several], f"{several}, {args.steps} steps"))
    emit("dub", rows, args.json, video={"seconds": args.seconds, "size": args.size})


if __name__ == "__main__":
    main()
