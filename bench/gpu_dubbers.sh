#!/usr/bin/env bash
# The mask-free dubbers on one GPU: each `factory train-dubber` recipe for a few hundred steps at
# 256 px (bf16 autocast), chained as a user would (xdub-stage2 phase 1 -> 2 -> 3; flashlips-refine
# editor -> lip_flow), then `factory dub` with each final folder on a demo talking video: training
# steps/s (from the wall time), held-out numbers (metrics.json) and dub frames/s (its JSON report).
# Prepared for a lent GPU machine and not yet run there (bench/README.md). Nothing downloads there
# either, so both recipes start from their CPU configs' tiny random models at 256 px (the GPU
# recipes, configs/dubber_*_gpu.yaml, need the local Wan2.2 / SDXL / Whisper / wav2vec 2.0 folders).
#
#   bash bench/gpu_dubbers.sh [STEPS] [RES]     (defaults 300 and 256; everything under runs/gpu-dubbers/)
#   bash bench/gpu_dubbers.sh 1 64              (a CPU smoke run of the same commands)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
RES=${2:-256}
OUT=runs/gpu-dubbers
PY=.venv/bin/python
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi: this runs on CPU"
clock() { date +%s.%N; }
rate() { $PY -c "import sys, time; s = time.time() - float(sys.argv[1]); print(f'{s:.1f} s, {int(sys.argv[2]) / s:.2f} steps/s (start-up and evaluations included)')" "$1" "$2"; }
LOOP=(loop.steps="$STEPS" loop.checkpoint_every="$STEPS" loop.eval_every="$STEPS" loop.eval_at_start=false loop.precision=bf16
      loop.device=null loop.progress=false)

# 1. pairs: a demo run (the embedded demo videos; 256-px crops), and a video + new audio to dub
$PY -m factory.cli run configs/demo.yaml out="$OUT/demo" executor.kind=local ingest.crop_size=256 -q
$PY - "$OUT" <<'EOF'
import sys
from pathlib import Path

import soundfile as sf

from factory.demo import SENTENCES, make_talking_video, speak

out = Path(sys.argv[1])
make_talking_video(out / "talk.mp4", SENTENCES[0], seconds=8.0, size=384, seed=0)
sf.write(out / "new.wav", speak(SENTENCES[1])[:8 * 16000], 16000, subtype="PCM_16")
EOF

train() {  # NAME CONFIG overrides...: one run; its final/ is the next run's init_from or the dubber
  local name=$1 config=$2
  shift 2
  local start
  start=$(clock)
  $PY -m factory.cli train-dubber "$config" manifests="[$OUT/demo]" data.resolution="$RES" \
      loop.out="$OUT/train-$name" "${LOOP[@]}" "$@" > "$OUT/train-$name.json"
  echo "$name: $STEPS training steps in $(rate "$start" "$STEPS")"; tail -c 600 "$OUT/train-$name.json"; echo
}

# 2. xdub-stage2, three phases (Wan's RoPE tables must cover the reference canvas shifted one width right)
ROPE=$(( RES / 4 > 32 ? RES / 4 : 32 ))
XDUB=(model.rope_max_seq_len="$ROPE" eval.steps=25)
train xdub-p1 configs/dubber_xdub_cpu.yaml "${XDUB[@]}" phase=1
train xdub-p2 configs/dubber_xdub_cpu.yaml "${XDUB[@]}" phase=2 init_from="$OUT/train-xdub-p1/final"
train xdub-p3 configs/dubber_xdub_cpu.yaml "${XDUB[@]}" phase=3 init_from="$OUT/train-xdub-p2/final"

# 3. flashlips-refine, two stages
train flashlips-editor configs/dubber_flashlips_cpu.yaml stage=editor
train flashlips-flow configs/dubber_flashlips_cpu.yaml stage=lip_flow init_from="$OUT/train-flashlips-editor/final"

# 4. factory dub with each dubber (multi-step X-Dub at 25 steps, single-step FlashLips); frames/s in the report
for NAME in xdub-p3 flashlips-flow; do
  $PY -m factory.cli dub "$OUT/talk.mp4" "$OUT/new.wav" --checkpoint "$OUT/train-$NAME/final" \
      -o "$OUT/dub-$NAME.mp4" -q > "$OUT/dub-$NAME.json"
  echo "factory dub, $NAME:"; $PY -c "import json, sys; r = json.loads(open(sys.argv[1]).read().rsplit('output:', 1)[0]); print({k: r[k] for k in ('dubber', 'frames', 'frames_dubbed', 'track_s', 'dub_s', 'write_s', 'frames_per_s')}, 'dubber pass alone:', round(r['frames'] / max(r['dub_s'], 1e-9), 2), 'frames/s')" "$OUT/dub-$NAME.json"
done
