#!/usr/bin/env bash
# The phase study's training arms on a GPU slot (issue 20 item 3), in two calls to one warm machine:
#
#   bash scripts/gpu_phase.sh OUT train     # train + export every run (parallel), pack all but hpcm-phase4-tiny
#   bash scripts/gpu_phase.sh OUT pack VARIANT ...   # next call, machine still warm: pack the rest
#
# The runs: the six -tiny arms, one variable-rate model each, the baseline with seeds 1 and 2, warm-started
# from src/hpcm/weights/hpcm-tiny-vr.safetensors, on the carried crops (.gpu/train-crops, from
# scripts/gpu_train_prepare.py), validated on .gpu/holdout (the CPU runs' 16 held-out training images),
# bf16, identical steps, batch and seed streams for every arm. The run folders live in runs/phase_gpu
# (ignored by git), which a warm machine keeps between calls; a slot returns at most 8 files and 64 MiB,
# and hpcm-phase4-tiny's weights alone are 23 MiB, so it comes back in the second call (docs/gpu.md).
# Here, afterwards: the same settings with --unpack DIR --resume --stages eval (phase_study.py prints them).
#   STEPS=1000 BATCH=16 VAL_EVERY=100 JOBS=7 DEVICE=cuda PYTHON=python3 (DEVICE=cpu: a dry run)
set -uo pipefail
OUT=${1:?usage: gpu_phase.sh OUT train|pack [VARIANT ...]}
MODE=${2:-train}
shift $(($# < 2 ? $# : 2))
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh
hpcm_gpu_env gpu_phase
VARIANTS=(hpcm-tiny hpcm-phase1-tiny hpcm-phase2-tiny hpcm-phase3-tiny hpcm-phase4-tiny hpcm-multiref-phase2-tiny)
STEPS=${STEPS:-1000}
# fresh Adam on trained weights: warm up (1e-5, 3e-5 from 10 %, 1e-4 from 30 %), then 1e-5 from 80 % (the
# dry run showed 2 steps straight at 1e-4 costing the shipped model ~3 dB at the top quality)
MILESTONES=("$((STEPS / 10)):3e-5" "$((STEPS * 3 / 10)):1e-4" "$((STEPS * 8 / 10)):1e-5")
COMMON=(--variants "${VARIANTS[@]}" --seeds 1 2 --variable-rate --qualities 1 2 3 4 5 6 7 8
        --steps "$STEPS" --batch-size "${BATCH:-16}" --patch-size 256 --lr 1e-5 --lr-milestones "${MILESTONES[@]}"
        --downscale-prob 0
        --data .gpu/train-crops --val .gpu/holdout --val-holdout 0 --val-every "${VAL_EVERY:-100}"
        --init-from src/hpcm/weights/hpcm-tiny-vr.safetensors --jobs "${JOBS:-7}" --threads 1
        --num-workers "${WORKERS:-1}" --device "$DEVICE" --out runs/phase_gpu --report "$OUT/report.md")
[ "${DEVICE%%:*}" = cuda ] && COMMON+=(--amp bf16)
echo "gpu_phase: settings: ${COMMON[*]}"
case "$MODE" in
  train)
    others=()
    for v in "${VARIANTS[@]}"; do [ "$v" != hpcm-phase4-tiny ] && others+=("$v"); done
    timeout -k 10 "${LIMIT:-560}" "$PY" experiments/phase_study.py "${COMMON[@]}" --resume \
      --stages train,export --pack "$OUT" --pack-variants "${others[@]}" 2>&1 | tail -n 60
    rc=${PIPESTATUS[0]} ;;
  pack)
    "$PY" experiments/phase_study.py "${COMMON[@]}" --resume --stages none --pack "$OUT" \
      --pack-variants "${@:-hpcm-phase4-tiny}" 2>&1 | tail -n 20
    rc=${PIPESTATUS[0]} ;;
  *) echo "gpu_phase: mode is train or pack" >&2; exit 2 ;;
esac
for f in runs/phase_gpu/*/seed*/vr/train.log; do  # the last lines of every run, for the console
  [ -f "$f" ] && { echo "== $f"; tail -n 3 "$f"; }
done
echo "gpu_phase: exit $rc; $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit "$rc"
