"""Every registered generator on the same demo pairs (same crop size), frames/s, in one run;
and the learned generators' training: steps/s against what their loader delivers.

    .venv/bin/python bench/generate.py [--run OUT] [--pairs 4] [--repeats 2] [--steps 4] [--json PATH]

Generators are discovered from the registry (factory.generators: its modules and the
`factory.generators` entry points). A learned generator (`needs_weights`) is benched with its
tiny random weights (`tiny()`, saved and loaded like a trained folder), at its own model
resolution; the DiT at 25 and at 50 sampler steps. Per generator, on the same prepared inputs
(clip loading, registration and masks untimed):
  - render alone (`generate_batch`), ratio to the compositing step every generator shares
    (factory.faces.masks.composite on the same frames);
  - the whole generate stage (load, register, mask, render, composite), ratio to its render alone:
    the share of the stage's time the generator itself takes (near 1: the generator is the
    bottleneck).
Then the latent editor's render rate over the DiT's (the papers: ~100 FPS vs ~1-5 FPS on GPUs),
and per learned generator's CPU training recipe (configs/generator_*_cpu.yaml, on this demo's clip
store): optimizer steps/s, and the loader's samples/s alone against the samples/s training
consumes (the loader must be >= 2x).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import add_json_flag, demo_run, emit, row  # noqa: E402
from factory.faces.masks import composite  # noqa: E402
from factory.generators import generator_class, generator_names  # noqa: E402
from factory.records import Record  # noqa: E402
from factory.stages.generate import GenerateConfig, GenerateStage  # noqa: E402


def pair_records(store: Path, n: int) -> list[Record]:
    """Up to `n` pairs of a clip store: each clip re-dubbed by the next clip of its video (as
    bench/storage.py pairs them), with the clip before it as motion frames."""
    by_video = defaultdict(list)
    for path in sorted(store.rglob("clips/*.npz")):
        if ".occlusion-" not in path.name:
            by_video[path.stem.rsplit("_c", 1)[0]].append(path)
    records = []
    for clips in by_video.values():
        for i, (a, b) in enumerate(zip(clips, clips[1:] + clips[:1])):
            meta = {"clip_path": str(a), "alt_clip_path": str(b)} | ({"motion_clip_path": str(clips[i - 1])} if i else {})
            records += [Record(a.stem, "pair", meta=meta)] if a != b else []
    return records[:n]


def fresh(records: list[Record]) -> list[Record]:
    return [Record(r.key, r.kind, meta=dict(r.meta)) for r in records]


def timed(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


# learned generators: the settings each is benched with (the DiT at two sampler step counts)
VARIANTS = {"dit_inpainter": [{"steps": 25}, {"steps": 50}]}
TRAIN_RECIPES = {"dit_inpainter": "configs/generator_dit_cpu.yaml", "latent_editor": "configs/generator_editor_cpu.yaml"}


def generate_configs(name: str, folder: Path, trained: dict[str, str]) -> list[tuple[str, GenerateConfig]]:
    """(label, config) per way to bench `name`: as is, from a trained folder given with --weights,
    or from its tiny random weights saved in `folder`."""
    cls = generator_class(name)
    if not cls.needs_weights:
        return [(name, GenerateConfig(generator=name))]
    if name in trained:
        weights, kind = trained[name], "trained"
    else:
        cls.tiny().save_pretrained(folder / name)
        weights, kind = str(folder / name), "tiny"
    return [(f"{name} ({kind}{''.join(f', {k}={v}' for k, v in v.items())})",
             GenerateConfig(generator=name, weights=weights, settings=dict(v) or None))
            for v in VARIANTS.get(name, [{}])]


def bench_generator(label: str, config: GenerateConfig, records: list[Record], repeats: int) -> list[dict]:
    stage = GenerateStage(config)
    stage.ensure_set_up()  # model building and loading are not timed
    prepared = [stage.prepare(r) for r in fresh(records)]
    inputs = [inp for inp, _, _ in prepared]
    frames = sum(len(inp.real_frames) for inp in inputs)
    stage.generator.generate_batch(inputs[:1])  # warm-up (lazy imports, first-call allocations)
    render_s = timed(lambda: stage.generator.generate_batch(inputs), repeats)
    rendered = stage.generator.generate_batch(inputs)
    composite_s = timed(lambda: [composite(inp.real_frames[:len(out)], out, alpha[:len(out)])
                                 for (inp, _, alpha), out in zip(prepared, rendered)], repeats)
    stage_s = timed(lambda: stage(fresh(records)), repeats)
    render = frames / render_s
    return [row(f"{label}: render (generate_batch)", render, "frames/s", frames / composite_s, "compositing"),
            row(f"{label}: generate stage (load+mask+render+composite)", frames / stage_s, "frames/s", render,
                "its render alone")]


def bench_training(name: str, store: Path, steps: int) -> list[dict]:
    """Optimizer steps/s of the CPU recipe (its loss, backward and step, on batches drawn ahead)
    and the loader's samples/s alone, on the same clip store."""
    import torch

    from factory.trainers.generators import load_recipe

    recipe = load_recipe(TRAIN_RECIPES[name], [f"clip_stores=[{store}]", "loop.executor=local"])
    batch = recipe.loop.batch_size
    batches = iter(recipe.train_batches(batch, 0, 1, recipe.loop.seed))
    next(batches)  # warm-up: opening clips, lazy imports
    start = time.perf_counter()
    drawn = [next(batches) for _ in range(steps)]
    loader = steps * batch / (time.perf_counter() - start)
    torch.manual_seed(0)
    model = recipe.build_model(torch.device("cpu"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.loop.lr)

    def step(i: int) -> None:
        loss, _ = recipe.loss(model, drawn[i], i)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(0)  # warm-up
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    steps_s = steps / (time.perf_counter() - start)
    return [row(f"{name}: training step (CPU recipe, batch {batch})", steps_s, "steps/s"),
            row(f"{name}: loader alone", loader, "samples/s", steps_s * batch, "what training consumes")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a finished run to take clips from (default: a fresh demo run)")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per learned generator (0: none)")
    parser.add_argument("--weights", action="append", default=[], metavar="NAME=DIR",
                        help="bench a trained generator folder instead of its tiny random weights")
    add_json_flag(parser)
    args = parser.parse_args()
    run = Path(args.run) if args.run else demo_run(Path(tempfile.mkdtemp(prefix="bench-generators-")) / "demo")
    records = pair_records(run / "clips", args.pairs)
    folder = Path(tempfile.mkdtemp(prefix="bench-generate-weights-"))
    rows, skipped, render = [], {}, {}
    for name in generator_names():
        try:
            for label, config in generate_configs(name, folder, dict(w.split("=", 1) for w in args.weights)):
                rows += bench_generator(label, config, records, args.repeats)
                render.setdefault(name, rows[-2]["throughput"])  # the first variant (DiT: 25 steps)
            if generator_class(name).needs_weights and name in TRAIN_RECIPES and args.steps > 0:
                store = next(p for p in (run / "clips").iterdir() if p.is_dir())
                rows += bench_training(name, store, args.steps)
        except Exception as exc:  # e.g. a plugin that cannot build here
            skipped[name] = f"{type(exc).__name__}: {exc}"
            print(f"skipped {name}: {skipped[name]}")
    if {"latent_editor", "dit_inpainter"} <= set(render):
        rows.append(row("latent editor / DiT (25 steps): render", render["latent_editor"], "frames/s",
                        render["dit_inpainter"], "DiT render"))
    emit("generate", rows, args.json, pairs=len(records), skipped=skipped)


if __name__ == "__main__":
    main()
