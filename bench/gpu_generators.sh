#!/usr/bin/env bash
# The learned generators on one GPU: train each for a few hundred steps at 256 px (bf16 autocast),
# time them rendering the demo pairs, and run the factory with them as GPU-pinned Ray actor pools.
# Prepared for a lent GPU machine; nothing downloads there either, so both models start from the
# CPU recipes' random configs at 256 px (the GPU recipes, configs/generator_*_gpu.yaml, need the
# local Wan2.2 / SDXL / Whisper folders).
#
#   bash bench/gpu_generators.sh [STEPS]     (default 300; everything under runs/gpu-bench/)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
OUT=runs/gpu-bench
PY=.venv/bin/python
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi: this runs on CPU"
clock() { date +%s.%N; }
since() { $PY -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f} s')" "$1"; }

# 1. a 256-px clip store from the embedded demo videos
$PY -m factory.cli ingest configs/demo.yaml out="$OUT/demo" ingest.crop_size=256 -q
STORE=$(ls -d "$OUT"/demo/clips/*/ | head -1)

# 2. train each (loop.out/final is its generator folder); steps/s and held-out numbers in metrics.json
declare -A RECIPE=([latent_editor]=configs/generator_editor_cpu.yaml [dit_inpainter]=configs/generator_dit_cpu.yaml)
for NAME in latent_editor dit_inpainter; do
  start=$(clock)
  $PY -m factory.cli train-generator "${RECIPE[$NAME]}" clip_stores="[$STORE]" data.resolution=256 \
      loop.out="$OUT/train-$NAME" loop.steps="$STEPS" loop.checkpoint_every="$STEPS" loop.eval_every="$STEPS" \
      loop.progress=false > "$OUT/train-$NAME.json"
  echo "$NAME: $STEPS training steps in $(since "$start")"; tail -c 600 "$OUT/train-$NAME.json"; echo
done

# 3. render rates of the trained folders (and transplant) on the demo pairs; peak GPU memory
$PY bench/generate.py --run "$OUT/demo" --pairs 4 --repeats 2 --steps 8 \
    --weights latent_editor="$OUT/train-latent_editor/final" --weights dit_inpainter="$OUT/train-dit_inpainter/final" \
    --json "$OUT/generate.json"

# 4. the factory with each, generate actors on half a GPU each (Ray places them)
for NAME in latent_editor dit_inpainter; do
  start=$(clock)
  $PY -m factory.cli pairs configs/demo.yaml clip_stores="[$STORE]" out="$OUT/pairs-$NAME" executor.kind=ray \
      generate.generator=$NAME generate.weights="$OUT/train-$NAME/final" \
      generate.resources.num_gpus=0.5 generate.resources.pool_size=2 -q
  echo "$NAME: factory pairs run in $(since "$start"):"; $PY -c "import json, sys; s = json.load(open(sys.argv[1])); print({k: s[k] for k in ('pairs_written', 'pairs_set_aside', 'wall_s', 'frames_per_s', 'rejections') if k in s})" "$OUT/pairs-$NAME/summary.json"
done
