#!/usr/bin/env bash
# The hpcm-tiny-vr training run (issue 18): resume it, or start it again from the shipped weights.
#   bash experiments/tiny_vr.sh resume [LR]     # continue runs/tiny-vr (copy it back from wherever it was kept)
#   bash experiments/tiny_vr.sh fresh  [LR]     # new run from the shipped hpcm-tiny-vr weights (fresh Adam)
#   bash experiments/tiny_vr.sh finish          # export, held-out comparison, Kodak eval into runs/
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/tiny-vr}
LR=${2:-1e-4}
COMMON=(--model hpcm-tiny-vr --data ../shared/data/train --out "$RUN" --steps 200000 --batch-size 8
        --patch-size 256 --val-holdout 16 --val-every 1000 --save-every 100 --log-every 25 --num-workers 1
        --lr "$LR" --lr-group 'quality_gains*=10' --downscale-prob 0.5 --seed 0 --no-progress)
case "${1:-}" in
  resume) OMP_NUM_THREADS=${THREADS:-2} .venv/bin/hpcm train "${COMMON[@]}" --resume ;;
  fresh) OMP_NUM_THREADS=${THREADS:-2} .venv/bin/hpcm train "${COMMON[@]}" \
           --init-from src/hpcm/weights/hpcm-tiny-vr.safetensors ;;
  finish)
    .venv/bin/hpcm export "$RUN/checkpoint_last.safetensors" -o "$RUN.safetensors" --force
    .venv/bin/python experiments/holdout_compare.py "$RUN.safetensors" -o "$RUN-holdout.json"
    .venv/bin/hpcm eval "$RUN.safetensors" ../shared/data/kodak -q 1 2 3 4 5 6 7 8 -o "$RUN-kodak.json" --quiet ;;
  *) echo "usage: $0 resume|fresh|finish [LR]" >&2; exit 2 ;;
esac
