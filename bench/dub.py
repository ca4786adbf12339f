"""`factory dub` frames/s per dubber on one demo talking video, in one run.

    .venv/bin/python bench/dub.py [--seconds 8] [--size 384] [--steps 25] [--json PATH]

The same video and new audio through `factory.dubbing.dub` with:
  - a pass-through dubber (renders nothing, alpha 0): tracking, pasting and encoding alone, the
    reference every other row's ratio is taken against (near 1: the pipeline is the bottleneck);
  - transplant (training-free), the tiny random latent_editor (one pass per frame: FlashLips'
    single step) and the tiny random dit_inpainter at --steps sampler steps (X-Dub's multi-step),
    each saved as a folder and loaded with --checkpoint as a user would;
then the dubber pass alone (the `dub_s` part of the report): latent_editor over dit_inpainter,
the single-step vs multi-step ratio (the papers: ~100 FPS vs ~1-5 FPS on GPUs; tiny random models
on CPU say little about those numbers, only about the pipeline around them).
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


def folders(tmp: Path, steps: int) -> dict[str, Path]:
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
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--size", type=int, default=384, help="video side in pixels (the demo's)")
    parser.add_argument("--steps", type=int, default=25, help="dit_inpainter sampler steps")
    add_json_flag(parser)
    args = parser.parse_args()
    from factory.demo import SENTENCES, make_talking_video, speak

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = make_talking_video(tmp / "video.mp4", SENTENCES[0], seconds=args.seconds, size=args.size, seed=0)
        sf.write(tmp / "new.wav", speak(SENTENCES[1])[:int(args.seconds * 16000)], 16000, subtype="PCM_16")
        reports = {}
        for name, folder in folders(tmp, args.steps).items():
            reports[name] = dub(video, tmp / "new.wav", tmp / f"{name}.mp4", checkpoint=folder, settings=DubSettings())
            print(name, json.dumps(reports[name]), flush=True)
    base = reports["passthrough"]["frames_per_s"]
    rows = [row("dub, pass-through (track + paste + encode)", base, "frames/s")]
    rows += [row(f"dub, {name}" + (f" ({args.steps} steps)" if name == "dit_inpainter" else ""),
                 r["frames_per_s"], "frames/s", base, "pass-through") for name, r in reports.items()
             if name != "passthrough"]
    alone = {name: r["frames"] / max(r["dub_s"], 1e-9) for name, r in reports.items()}
    rows.append(row("dubber pass alone, latent_editor (single step)", alone["latent_editor"], "frames/s",
                    alone["dit_inpainter"], f"dit_inpainter, {args.steps} steps"))
    emit("dub", rows, args.json, video={"seconds": args.seconds, "size": args.size})


if __name__ == "__main__":
    main()
